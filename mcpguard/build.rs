//! Builds the eBPF programs (mcpguard-ebpf) with the nightly toolchain and
//! bpf-linker, so the daemon can embed the object. `cargo xtask setup`
//! installs both.

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("..");
    let ebpf_dir = root.join("mcpguard-ebpf");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("mcpguard-common/src").display()
    );
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mcpguard-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
