//! The per-tool count: concurrent calls share what is open, one ending
//! does not close another's, and each switch is in the call's records.

use std::{
    net::Ipv6Addr,
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde_json::json;

use super::*;
use crate::{
    audit::Body,
    dns::MapSink,
    policy::{NetEntry, Policy},
};

/// The allow map, as `+ADDR/LEN` and `-ADDR/LEN` writes.
#[derive(Default)]
struct Map(Mutex<Vec<String>>);

fn show(e: &NetEntry) -> String {
    let addr = Ipv6Addr::from(e.key.addr).to_ipv4_mapped().unwrap();
    format!("{addr}/{}", e.prefix_len - 64 - 96)
}

impl MapSink for Arc<Map> {
    fn install(&self, e: &NetEntry) -> Result<(), String> {
        self.0.lock().unwrap().push(format!("+{}", show(e)));
        Ok(())
    }
    fn remove(&self, e: &NetEntry) {
        self.0.lock().unwrap().push(format!("-{}", show(e)));
    }
    fn audit(&self, _: SystemTime, _: Body) {}
    fn stranger(&self, _: SystemTime, _: Body, _: Option<u32>) {}
}

struct Fixture {
    net: CallNetwork,
    map: Arc<Map>,
    view: Arc<DnsView>,
    /// (tool, id, detail) of each record.
    records: Arc<Mutex<Vec<(String, Value, Value)>>>,
}

impl Fixture {
    fn new() -> Fixture {
        let text = "name = \"f\"\n[network]\nallow = [\"10.0.0.0/8:443\"]\n\
                    [tools.fetch]\nnetwork = [\"192.0.2.1:80\", \"*:443\"]\n\
                    [tools.get]\nnetwork = [\"192.0.2.1:80\", \"192.0.2.2:80\"]\n";
        let policy = Policy::parse(text, Path::new("f.toml")).unwrap();
        let map = Arc::new(Map::default());
        let view = Arc::new(DnsView::new(
            7,
            policy.network.hosts.clone(),
            policy.network.allow.clone(),
            None,
            false,
            Box::new(map.clone()),
        ));
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let net = CallNetwork::default();
        net.register(
            7,
            Server {
                rules: policy.tools.call_net,
                view: view.clone(),
                record: Box::new(move |detail, tool, id| {
                    sink.lock()
                        .unwrap()
                        .push((tool.to_owned(), id.clone(), detail));
                }),
            },
        );
        Fixture {
            net,
            map,
            view,
            records,
        }
    }

    fn writes(&self) -> Vec<String> {
        let mut w = std::mem::take(&mut *self.map.0.lock().unwrap());
        w.sort();
        w
    }

    /// The last record's (tool, id, network, calls).
    fn last(&self) -> (String, Value, Value, Value) {
        let (tool, id, detail) = self.records.lock().unwrap().last().cloned().unwrap();
        (tool, id, detail["network"].clone(), detail["calls"].clone())
    }
}

#[test]
fn concurrent_calls_of_a_tool_share_its_rules_until_the_last_ends() {
    let f = Fixture::new();
    f.net.started(7, &json!(1), "fetch").unwrap();
    assert_eq!(f.writes(), ["+192.0.2.1/32"]);
    assert_eq!(
        f.last(),
        ("fetch".into(), json!(1), json!("open"), json!(1))
    );
    f.net.started(7, &json!(2), "fetch").unwrap();
    assert_eq!(f.writes(), Vec::<String>::new());
    assert_eq!(f.last().3, json!(2));
    f.net.ended(7, &json!(1), "fetch").unwrap();
    assert_eq!(f.writes(), Vec::<String>::new());
    assert_eq!(
        f.last(),
        ("fetch".into(), json!(1), json!("kept"), json!(1))
    );
    f.net.ended(7, &json!(2), "fetch").unwrap();
    assert_eq!(f.writes(), ["-192.0.2.1/32"]);
    assert_eq!(
        f.last(),
        ("fetch".into(), json!(2), json!("closed"), json!(0))
    );
}

#[test]
fn two_tools_in_flight_get_the_union_and_one_ending_keeps_the_others() {
    let f = Fixture::new();
    f.net.started(7, &json!(1), "fetch").unwrap();
    f.net.started(7, &json!(2), "get").unwrap();
    assert_eq!(f.writes(), ["+192.0.2.1/32", "+192.0.2.2/32"]);
    // fetch ends: get still needs 192.0.2.1 and both of its rules stay.
    f.net.ended(7, &json!(1), "fetch").unwrap();
    assert_eq!(f.writes(), Vec::<String>::new());
    f.net.ended(7, &json!(2), "get").unwrap();
    assert_eq!(f.writes(), ["-192.0.2.1/32", "-192.0.2.2/32"]);
}

#[test]
fn tools_without_rules_and_other_servers_change_nothing() {
    let f = Fixture::new();
    f.net.started(7, &json!(1), "echo").unwrap();
    f.net.ended(7, &json!(1), "echo").unwrap();
    f.net.started(8, &json!(1), "fetch").unwrap();
    f.net.ended(8, &json!(1), "fetch").unwrap();
    // An end without its start (a call from before a restart) neither.
    f.net.ended(7, &json!(3), "fetch").unwrap();
    assert_eq!(f.writes(), Vec::<String>::new());
    assert!(f.records.lock().unwrap().is_empty());
}

#[test]
fn a_server_forgotten_with_calls_in_flight_has_them_closed() {
    let f = Fixture::new();
    f.net.started(7, &json!(1), "get").unwrap();
    f.writes();
    f.net.forgotten(7);
    assert_eq!(f.writes(), ["-192.0.2.1/32", "-192.0.2.2/32"]);
    // Gone: a late start opens nothing.
    f.net.started(7, &json!(2), "get").unwrap();
    assert_eq!(f.writes(), Vec::<String>::new());
}

#[test]
fn rules_that_cannot_open_refuse_loudly() {
    let f = Fixture::new();
    // The resolver closed under the server (teardown racing a call).
    f.view.close_all();
    f.writes();
    let error = f.net.started(7, &json!(1), "fetch").unwrap_err();
    assert!(error.to_string().contains("closed"), "{error}");
    let (_, _, detail) = f.records.lock().unwrap().last().cloned().unwrap();
    assert_eq!(detail["network"], "open");
    assert!(
        detail["error"].as_str().unwrap().contains("closed"),
        "{detail}"
    );
    assert_eq!(f.writes(), Vec::<String>::new());
}
