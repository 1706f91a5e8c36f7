//! The VPN end to end in network namespaces (needs root and `ip`; `ping` for the pings):
//! dataplanes in namespaces A (client), B (relay) and C (server, with a host address behind its
//! TUN), joined by veth pairs. Ping and a 100 MiB TCP transfer from A to C's host through A→B→C
//! over IPv4 and IPv6, stable addresses across reconnects, a refused key and a forged source
//! that get nothing through, and namespaces left exactly as they were, also after a full-tunnel
//! client was killed with SIGKILL and started again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../../tests/common/dataplane.rs"]
mod dataplane;
#[path = "../../tests/common/machine.rs"]
mod machine;
#[path = "../../tests/common/netns.rs"]
mod netns;
#[path = "../../tests/common/temp.rs"]
mod temp;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::{driver_options, wait_for, Running};
use machine::require;
use netns::{
    can_make_namespaces, enter_netns, in_netns, ip, ns_run, reaches, snapshot, transfer,
    Namespaces, TRANSFER,
};
use skywire_dataplane::api::vpn::{VpnApp, VpnStatus};
use skywire_dataplane::api::{Reply, Request};
use skywire_dataplane::driver::DriverOptions;
use skywire_dataplane::vpn::{ClientOptions, ServerOptions, VpnOptions};
use skywire_dataplane::{NeighbourConfig, NodeKey, SecretKey};
use temp::TempDir;

const HOST4: &str = "10.99.0.1";
const HOST6: &str = "fd99::1";

impl Running {
    /// A dataplane running on a thread in namespace `ns`.
    fn start_in(ns: &str, options: DriverOptions) -> Running {
        Running::start_in_with(ns, options, || {})
    }

    /// As [`Running::start_in`], the thread running `prepare` first.
    fn start_in_with(ns: &str, options: DriverOptions, prepare: fn()) -> Running {
        let spawn = |body: dataplane::Body| {
            in_netns(ns, move || {
                prepare();
                body()
            })
        };
        Running::start_on(options, spawn).0
    }

    fn vpn(&mut self, request: Request) -> VpnStatus {
        match self.ask(request) {
            Ok(Reply::Vpn(status)) => *status,
            other => panic!("no VPN status: {other:?}"),
        }
    }
}

/// A node's options in a namespace: every address, the VPN's state in `state_dir`.
fn options(secret: SecretKey, neighbours: Vec<NeighbourConfig>, state_dir: &Path) -> DriverOptions {
    let mut options = driver_options(secret, neighbours);
    options.listen = "[::]:7777".parse().unwrap();
    options.vpn = VpnOptions {
        state_dir: state_dir.to_path_buf(),
        ..VpnOptions::default()
    };
    options
}

/// A neighbour; an `endpoint` given as text.
fn neighbour(key: NodeKey, endpoint: Option<&str>) -> NeighbourConfig {
    dataplane::neighbour(key, endpoint.map(|text| text.parse().unwrap()))
}

fn client_state(node: &mut Running) -> VpnStatus {
    node.vpn(Request::VpnStatus)
}

fn wait_client_up(node: &mut Running) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = client_state(node).client.unwrap();
        if status.state == "up" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the VPN client is not up: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.ipv4.unwrap(), status.ipv6.unwrap())
}

fn server_options(allow: Vec<NodeKey>) -> ServerOptions {
    ServerOptions {
        start: true,
        tun: "skysrv".parse().unwrap(),
        pool4: Some("10.77.0.0/24".parse().unwrap()),
        pool6: Some("fd77::/64".parse().unwrap()),
        allow,
        port: 7001,
    }
}

fn client_options(server: NodeKey, path: Vec<NodeKey>, routes: &[&str]) -> ClientOptions {
    ClientOptions {
        start: true,
        tun: "skycli".parse().unwrap(),
        server,
        path: Some(path),
        routes: routes.iter().map(|route| route.parse().unwrap()).collect(),
        port: 7001,
    }
}

#[test]
fn vpn_through_a_relay_end_to_end() {
    const TEST: &str = "vpn_through_a_relay_end_to_end";
    if !can_make_namespaces(TEST) {
        return;
    }
    let with_ping = require("ping", TEST);
    let ns = Namespaces::new("skyvpn", 3);
    let (a_ns, b_ns, c_ns) = (ns.name(0), ns.name(1), ns.name(2));
    ns.link(0, "10.201.1.1", 1, "10.201.1.2");
    ns.link(1, "10.201.2.1", 2, "10.201.2.2");
    ns.add_host(2, HOST4);
    ns.add_host(2, HOST6);
    let before_a = snapshot(&a_ns);
    let before_b = snapshot(&b_ns);
    let before_c = snapshot(&c_ns);

    let (a_secret, b_secret, c_secret) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let (a_key, b_key, c_key) = (a_secret.public(), b_secret.public(), c_secret.public());
    // Another allowed client's lease, which A will try to use.
    let other_key = SecretKey::generate().public();
    let c_state = TempDir::new("vpn-c");
    std::fs::write(
        c_state.path("vpn-leases.yaml"),
        format!(
            "version: 1\nleases:\n  - key: {other_key}\n    ipv4: 10.77.0.9\n    ipv6: fd77::9\n"
        ),
    )
    .unwrap();

    let mut c_options = options(c_secret, vec![neighbour(b_key, None)], c_state.root());
    c_options.vpn.server = Some(server_options(vec![a_key, other_key]));
    let mut c = Running::start_in(&c_ns, c_options);
    let b_state = TempDir::new("vpn-b");
    let mut b_options = options(
        b_secret,
        vec![
            neighbour(a_key, None),
            neighbour(c_key, Some("10.201.2.2:7777")),
        ],
        b_state.root(),
    );
    // B is a client too, whose key the server does not allow.
    b_options.vpn.client = Some(client_options(c_key, vec![], &[]));
    let mut b = Running::start_in(&b_ns, b_options);
    let a_state = TempDir::new("vpn-a");
    let mut a_options = options(
        a_secret,
        vec![neighbour(b_key, Some("10.201.1.2:7777"))],
        a_state.root(),
    );
    a_options.vpn.client = Some(client_options(
        c_key,
        vec![b_key],
        &["10.99.0.0/24", "fd99::/64", "10.77.0.0/24", "fd77::/64"],
    ));
    let mut a = Running::start_in(&a_ns, a_options);

    let (v4, v6) = wait_client_up(&mut a);
    assert_eq!((v4.as_str(), v6.as_str()), ("10.77.0.2/24", "fd77::2/64"));
    let status = c.vpn(Request::VpnStatus).server.unwrap();
    assert_eq!(status.state, "running");
    assert_eq!(status.clients.len(), 1, "{status:?}");
    let Ok(Reply::Routes(routes)) = a.ask(Request::ListRoutes) else {
        panic!("no routes");
    };
    assert_eq!(routes.routes[0].path.len(), 3, "A→B→C: {routes:?}");

    // Ping and a 100 MiB transfer through the tunnel, IPv4 and IPv6.
    if with_ping {
        assert!(reaches(&a_ns, HOST4), "ping over IPv4");
        assert!(reaches(&a_ns, HOST6), "ping over IPv6");
    }
    let started = Instant::now();
    let (sent, received) = transfer(&a_ns, &c_ns, format!("{HOST4}:5201").parse().unwrap());
    println!(
        "100 MiB through the tunnel over IPv4 in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sent.0, TRANSFER);
    assert_eq!(sent, received, "the checksums match");
    let (sent, received) = transfer(&a_ns, &c_ns, format!("[{HOST6}]:5202").parse().unwrap());
    assert_eq!(sent, received, "IPv6 inside the tunnel");
    let status = a.vpn(Request::VpnStatus).client.unwrap();
    assert!(status.tx.bytes > 2 * TRANSFER as u64, "{status:?}");

    // A reconnect (client restarted) and a server restart keep the addresses.
    a.vpn(Request::VpnStop {
        app: VpnApp::Client,
    });
    assert!(
        !ip(&["-n", &a_ns, "link", "show"]).contains("skycli"),
        "the TUN device went"
    );
    a.vpn(Request::VpnStart {
        app: VpnApp::Client,
    });
    assert_eq!(wait_client_up(&mut a), (v4.clone(), v6.clone()));
    c.vpn(Request::VpnStop {
        app: VpnApp::Server,
    });
    c.vpn(Request::VpnStart {
        app: VpnApp::Server,
    });
    wait_for(
        "A reconnected after the server restarted",
        Duration::from_secs(30),
        || {
            let status = a.vpn(Request::VpnStatus).client.unwrap();
            status.state == "up" && status.reconnects >= 1
        },
    );
    assert_eq!(wait_client_up(&mut a), (v4.clone(), v6.clone()));
    if with_ping {
        assert!(reaches(&a_ns, HOST4), "ping after the reconnect");
    }

    // A forges the other client's address: nothing gets through, the server counts it.
    ip(&[
        "-n",
        &a_ns,
        "address",
        "add",
        "10.77.0.9/32",
        "dev",
        "skycli",
    ]);
    send_datagrams(&a_ns, "10.77.0.9", HOST4);
    wait_for(
        "the forged datagrams counted",
        Duration::from_secs(10),
        || {
            c.vpn(Request::VpnStatus)
                .server
                .unwrap()
                .drops
                .forged_source
                >= 2
        },
    );
    ip(&[
        "-n",
        &a_ns,
        "address",
        "del",
        "10.77.0.9/32",
        "dev",
        "skycli",
    ]);

    // B's key is not allowed: refused, and what it sends anyway is dropped.
    wait_for("B refused", Duration::from_secs(30), || {
        b.vpn(Request::VpnStatus)
            .client
            .unwrap()
            .state
            .contains("the server refused the lease stream")
    });
    ip(&[
        "-n",
        &b_ns,
        "address",
        "add",
        "10.77.0.50/32",
        "dev",
        "skycli",
    ]);
    ip(&["-n", &b_ns, "link", "set", "skycli", "up"]);
    ip(&[
        "-n",
        &b_ns,
        "route",
        "add",
        &format!("{HOST4}/32"),
        "dev",
        "skycli",
        "src",
        "10.77.0.50",
    ]);
    send_datagrams(&b_ns, "10.77.0.50", HOST4);
    wait_for(
        "the refused client's datagrams counted",
        Duration::from_secs(10),
        || c.vpn(Request::VpnStatus).server.unwrap().drops.no_lease >= 2,
    );

    a.stop();
    b.stop();
    c.stop();
    assert_eq!(snapshot(&a_ns), before_a, "A is as it was");
    assert_eq!(snapshot(&b_ns), before_b, "B is as it was");
    assert_eq!(snapshot(&c_ns), before_c, "C is as it was");
}

/// Sends two UDP datagrams from `source` in namespace `ns` to port 9 of `host`.
fn send_datagrams(ns: &str, source: &str, host: &str) {
    let source: IpAddr = source.parse().unwrap();
    let target = SocketAddr::new(host.parse().unwrap(), 9);
    in_netns(ns, move || {
        let socket = UdpSocket::bind((source, 0)).unwrap();
        for _ in 0..2 {
            socket.send_to(b"not for the tunnel", target).unwrap();
        }
    })
    .join()
    .unwrap();
}

/// Drops CAP_NET_ADMIN from the calling thread's effective capabilities (capabilities are
/// per thread).
fn drop_net_admin() {
    use nix::libc;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget and capset read and write exactly these version-3 structures.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << 12);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

#[test]
fn without_cap_net_admin_the_vpn_says_what_to_do_and_the_node_runs() {
    if !can_make_namespaces("without_cap_net_admin_the_vpn_says_what_to_do_and_the_node_runs") {
        return;
    }
    let ns = Namespaces::new("skyvpn", 1);
    let state = TempDir::new("vpn-nocap");
    let server_key = SecretKey::generate().public();
    let mut options = options(SecretKey::generate(), vec![], state.root());
    options.vpn.server = Some(server_options(vec![server_key]));
    options.vpn.client = Some(client_options(server_key, vec![], &[]));
    let mut node = Running::start_in_with(&ns.name(0), options, drop_net_admin);
    let status = node.vpn(Request::VpnStatus);
    for state in [status.server.unwrap().state, status.client.unwrap().state] {
        assert!(state.starts_with("failed: "), "{state}");
        assert!(
            state.contains("CAP_NET_ADMIN") && state.contains("run skywired as root"),
            "{state}"
        );
    }
    match node.ask(Request::VpnStart {
        app: VpnApp::Client,
    }) {
        Err(error) => assert!(error.to_string().contains("CAP_NET_ADMIN"), "{error}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(
        matches!(node.ask(Request::Status), Ok(Reply::Status(_))),
        "the node runs on"
    );
    node.stop();
    assert!(!ip(&["-n", &ns.name(0), "link", "show"]).contains("sky"));
}

/// The environment variable that makes [`full_tunnel_child`] run a client.
const CHILD_ENV: &str = "SKYWIRE_VPN_TEST_CHILD";

/// Run by `full_tunnel_is_cleaned_after_sigkill` as a child process: a full-tunnel client in
/// a namespace, until its standard input closes.
#[test]
#[ignore = "a child process of full_tunnel_is_cleaned_after_sigkill"]
fn full_tunnel_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let fields: Vec<&str> = spec.split(' ').collect();
    let [ns, secret, server, endpoint, state] = fields[..] else {
        panic!("bad child spec {spec:?}");
    };
    enter_netns(ns);
    let secret: SecretKey = secret.parse().unwrap();
    let server: NodeKey = server.parse().unwrap();
    let mut driver = options(
        secret,
        vec![neighbour(server, Some(endpoint))],
        Path::new(state),
    );
    driver.vpn.client = Some(client_options(server, vec![], &["0.0.0.0/0", "::/0"]));
    let (node, _) = Running::start(driver);
    let mut line = String::new();
    let _ = std::io::stdin().read_to_string(&mut line);
    node.stop();
}

fn spawn_child(spec: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "full_tunnel_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn full_tunnel_is_cleaned_after_sigkill() {
    const TEST: &str = "full_tunnel_is_cleaned_after_sigkill";
    if !can_make_namespaces(TEST) {
        return;
    }
    let with_ping = require("ping", TEST);
    let ns = Namespaces::new("skyvpn", 2);
    let (a_ns, c_ns) = (ns.name(0), ns.name(1));
    ns.link(0, "10.202.1.1", 1, "10.202.1.2");
    ns.add_host(1, HOST4);
    ns.add_host(1, HOST6);
    // A default route on the underlay, which the full tunnel must override but keep usable.
    ip(&["-n", &a_ns, "route", "add", "default", "via", "10.202.1.2"]);
    let before = snapshot(&a_ns);

    let (a_secret, c_secret) = (SecretKey::generate(), SecretKey::generate());
    let (a_key, c_key) = (a_secret.public(), c_secret.public());
    let c_state = TempDir::new("vpn-full-c");
    let mut c_options = options(c_secret, vec![neighbour(a_key, None)], c_state.root());
    c_options.vpn.server = Some(server_options(vec![a_key]));
    let c = Running::start_in(&c_ns, c_options);
    let a_state = TempDir::new("vpn-full-a");
    let spec = format!(
        "{a_ns} {} {c_key} 10.202.1.2:7777 {}",
        a_secret.to_base64(),
        a_state.root().display()
    );

    let tunnel_up = || {
        let addresses = Command::new("ip")
            .args(["-n", &a_ns, "address", "show", "dev", "skycli"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&addresses.stdout).contains("10.77.0.2/24")
            && (!with_ping || ns_run(&a_ns, &["ping", "-c", "1", "-W", "1", HOST4]))
    };
    let mut child = spawn_child(&spec);
    wait_for("the full tunnel up", Duration::from_secs(30), || {
        tunnel_up()
    });
    if with_ping {
        wait_for(
            "a ping over IPv6 through the full tunnel",
            Duration::from_secs(20),
            || ns_run(&a_ns, &["ping", "-6", "-c", "1", "-W", "1", HOST6]),
        );
    }
    // Everything goes into the tunnel, the host behind the underlay's default route too.
    for host in [HOST4, HOST6, "192.0.2.1"] {
        let route = ip(&["-n", &a_ns, "route", "get", host]);
        assert!(route.contains("dev skycli"), "{host}: {route}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let leftovers = snapshot(&a_ns);
    assert_ne!(
        leftovers, before,
        "a SIGKILLed client leaves its policy rules"
    );
    assert!(leftovers.contains("not from all fwmark"), "{leftovers}");

    let mut child = spawn_child(&spec);
    wait_for("the full tunnel up again", Duration::from_secs(30), || {
        tunnel_up()
    });
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(snapshot(&a_ns), before, "A is exactly as it was");
    c.stop();
}
