//! The classic BPF assembler both seccomp filters emit through: ops with
//! symbolic labels, forward jumps resolved and range-checked (a cBPF jump
//! offset is one byte). Tests run the result with `run`, an interpreter
//! of the same instruction subset.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CbpfError {
    /// A jump spans more than 255 instructions (the program's length).
    #[error("the filter has {0} instructions; a jump cannot span that far")]
    TooLong(usize),
}

/// How a conditional jump compares the accumulator with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// Equal.
    Eq,
    /// Greater or equal (unsigned).
    Ge,
    /// Has any of the value's bits.
    Set,
}

/// One instruction, or a label's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<L> {
    /// Loads the 32-bit word at this offset of `struct seccomp_data`.
    Load(u32),
    /// Masks the accumulator.
    And(u32),
    /// Jumps to the label if the test holds.
    If(Test, u32, L),
    /// Jumps to the label unless the test holds.
    Unless(Test, u32, L),
    /// Returns this seccomp action.
    Ret(u32),
    /// Places a label (emits nothing).
    Here(L),
}

/// The program for `ops`, jumps resolved. Every jump goes forward to a
/// label placed once.
pub fn assemble<L: Copy + PartialEq>(ops: &[Op<L>]) -> Result<Vec<libc::sock_filter>, CbpfError> {
    let mut at = Vec::new();
    let mut pc = 0usize;
    for op in ops {
        match op {
            Op::Here(l) => at.push((*l, pc)),
            _ => pc += 1,
        }
    }
    let target = |l: L| at.iter().find(|(x, _)| *x == l).map(|(_, pc)| *pc);
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut out = Vec::with_capacity(pc);
    for op in ops {
        let here = out.len();
        out.push(match *op {
            Op::Here(_) => continue,
            Op::Load(off) => ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, off),
            Op::And(k) => ins(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, k),
            Op::Ret(k) => ins(libc::BPF_RET | libc::BPF_K, 0, 0, k),
            Op::If(test, k, l) | Op::Unless(test, k, l) => {
                let to = target(l).expect("every jump target is placed");
                let off = to
                    .checked_sub(here + 1)
                    .and_then(|d| u8::try_from(d).ok())
                    .ok_or(CbpfError::TooLong(pc))?;
                let code = libc::BPF_JMP
                    | libc::BPF_K
                    | match test {
                        Test::Eq => libc::BPF_JEQ,
                        Test::Ge => libc::BPF_JGE,
                        Test::Set => libc::BPF_JSET,
                    };
                match op {
                    Op::If(..) => ins(code, off, 0, k),
                    _ => ins(code, 0, off, k),
                }
            }
        });
    }
    Ok(out)
}

/// Runs `prog` the way the kernel would on one syscall (`args`: the low
/// 32 bits of the first three arguments) and returns its action.
#[cfg(test)]
pub fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u32; 3]) -> u32 {
    use super::syscalls::off_arg;
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        let off = off_arg(i as u32) as usize;
        data[off..off + 4].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
        match u32::from(i.code) {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
            }
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= i.k,
            c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => pc += jump(acc == i.k),
            c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => pc += jump(acc >= i.k),
            c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => pc += jump(acc & i.k != 0),
            c if c == libc::BPF_RET | libc::BPF_K => return i.k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_true_and_false_branches() {
        let ops = [
            Op::Load(0),
            Op::If(Test::Eq, 7, 'a'),
            Op::Unless(Test::Ge, 100, 'b'),
            Op::Ret(1),
            Op::Here('a'),
            Op::Ret(2),
            Op::Here('b'),
            Op::Ret(3),
        ];
        let p = assemble(&ops).unwrap();
        assert_eq!(p.len(), 6);
        assert_eq!((p[1].jt, p[1].jf), (2, 0));
        assert_eq!((p[2].jt, p[2].jf), (0, 2));
        assert_eq!(run(&p, 0, 7, [0; 3]), 2);
        assert_eq!(run(&p, 0, 100, [0; 3]), 1);
        assert_eq!(run(&p, 0, 5, [0; 3]), 3);
    }

    #[test]
    fn a_jump_past_255_instructions_is_refused() {
        let mut ops = vec![Op::Load(0), Op::If(Test::Eq, 1, ())];
        ops.extend(std::iter::repeat_n(Op::Ret(0), 256));
        ops.extend([Op::Here(()), Op::Ret(1)]);
        assert_eq!(assemble(&ops).unwrap_err(), CbpfError::TooLong(259));
    }
}
