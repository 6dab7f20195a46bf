//! The device hub of till-server (issue 7) with till-engine's hub client: a real server process on
//! loopback, devices connected over WebSocket, masters made by head writes carrying a lease
//! header (as a master's replicator writes them). The master's node is a recording executor here;
//! tests/tests/invoice_api.rs runs the same path with a real node on the devnet.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use till_engine::{CommandExecutor, HubClient, HubCommand, HubConfig, HubError, HubStatus};
use till_log::DeviceId;
use till_tests::server::{StoreArg, TillServer, add_token, add_user, server_binary};
use till_tests::shop::{hub_request, write_head};
use till_tests::tls_front::TlsFront;

const STORE: &str = "shop";
/// The VSS store id the devices back up to (derived from the wallet in real life).
const VSS_STORE: &str = "vss-store-of-shop";
const WAIT: Duration = Duration::from_secs(15);

const A: DeviceId = DeviceId([0xa1; 16]);
const B: DeviceId = DeviceId([0xb2; 16]);
const C: DeviceId = DeviceId([0xc3; 16]);

/// A master's node stand-in: records the commands it ran and answers them.
#[derive(Default)]
struct Recorder {
    ran: Mutex<Vec<HubCommand>>,
    /// How long it takes over each command.
    delay: Mutex<Duration>,
    /// What its node "received" (payment hash, msat), for `recent_receipts`.
    received: Mutex<Vec<([u8; 32], Option<u64>)>>,
}

impl CommandExecutor for Recorder {
    fn execute(&self, command: &HubCommand) -> Result<Value, String> {
        self.ran.lock().unwrap().push(command.clone());
        std::thread::sleep(*self.delay.lock().unwrap());
        match command {
            HubCommand::Balances => Ok(json!({ "lightning_sats": 4242 })),
            HubCommand::CreateInvoice { amount_sat, .. } => Ok(json!({
                "bolt11": format!("lnbcrt{amount_sat}fake"),
                "payment_hash": "ab".repeat(32),
            })),
            HubCommand::Pay { .. } => Err("no route to the payee".to_owned()),
            _ => Ok(Value::Null),
        }
    }

    fn recent_receipts(&self) -> Vec<([u8; 32], Option<u64>)> {
        self.received.lock().unwrap().clone()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    server: TillServer,
    token: String,
    other_token: String,
    cashier_token: String,
    runtime: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let binary = server_binary();
    let store = StoreArg::DataDir(dir.path().to_owned());
    let token = add_user(&binary, &store, STORE);
    let other_token = add_user(&binary, &store, "other");
    let cashier_token = add_token(&binary, &store, STORE, "cashier");
    let server = TillServer::start(
        &binary,
        store,
        &[
            "--heartbeat-secs",
            "0.5",
            "--command-timeout-secs",
            "5",
            "--node-address",
            "02aa@127.0.0.1:9735",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    Setup {
        _dir: dir,
        server,
        token,
        other_token,
        cashier_token,
        runtime,
    }
}

impl Setup {
    fn device(
        &self,
        token: &str,
        store: &str,
        device: DeviceId,
        executor: Option<Arc<dyn CommandExecutor>>,
    ) -> HubClient {
        connect(&self.runtime, &self.server, token, store, device, executor)
    }

    fn make_master(&self, device: DeviceId, epoch: u64, held: bool) {
        make_master(
            &self.runtime,
            &self.server,
            &self.token,
            device,
            epoch,
            held,
        );
    }

    /// Creates an invoice through the store API with `token`: the server answers 201 and it.
    fn create_invoice(&self, token: &str, body: Value) -> Value {
        self.runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(format!(
                    "{}/api/v1/stores/{STORE}/invoices",
                    self.server.url()
                ))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 201);
            response.json().await.unwrap()
        })
    }

    fn wait(&self, client: &HubClient, what: &str, done: impl FnMut(&HubStatus) -> bool) {
        wait_status(&self.runtime, client, what, done);
    }
}

/// A device of `store` connected to `server`'s hub.
fn connect(
    runtime: &tokio::runtime::Runtime,
    server: &TillServer,
    token: &str,
    store: &str,
    device: DeviceId,
    executor: Option<Arc<dyn CommandExecutor>>,
) -> HubClient {
    let _guard = runtime.enter();
    let mut config = HubConfig::new(server.url(), token, store, device, executor);
    config.max_backoff = Duration::from_millis(500);
    config.command_timeout = Duration::from_secs(10);
    HubClient::start(config)
}

/// Makes `device` the store's master (or releases its lease) by a head write to `server`.
fn make_master(
    runtime: &tokio::runtime::Runtime,
    server: &TillServer,
    token: &str,
    device: DeviceId,
    epoch: u64,
    held: bool,
) {
    runtime.block_on(write_head(
        &server.vss_url(),
        token,
        VSS_STORE,
        device,
        epoch,
        held,
    ));
}

fn wait_status(
    runtime: &tokio::runtime::Runtime,
    client: &HubClient,
    what: &str,
    done: impl FnMut(&HubStatus) -> bool,
) {
    if let Err(last) = runtime.block_on(client.wait_for(WAIT, done)) {
        panic!("timed out waiting for {what}; status: {last:?}");
    }
}

fn master_is(device: DeviceId) -> impl FnMut(&HubStatus) -> bool {
    move |s| s.master.as_ref().map(|m| m.device.clone()) == Some(device.to_string())
}

#[test]
fn master_changes_are_pushed_to_every_device_of_the_store() {
    let s = setup();
    let a = s.device(&s.token, STORE, A, None);
    let b = s.device(&s.token, STORE, B, None);
    let elsewhere = s.device(&s.other_token, "other", C, None);
    for client in [&a, &b, &elsewhere] {
        s.wait(client, "the welcome", |st| st.connected);
    }
    assert_eq!(a.status().master, None, "no device holds the lease yet");
    assert_eq!(
        a.status().node_address.as_deref(),
        Some("02aa@127.0.0.1:9735"),
        "the server announces its Lightning node"
    );

    s.make_master(A, 1, true);
    s.wait(&a, "A to learn it is master", master_is(A));
    s.wait(&b, "B to learn A is master", master_is(A));

    // A hands over: it releases, B acquires with the next epoch.
    s.make_master(A, 1, false);
    s.wait(&b, "B to learn the store has no master", |st| {
        st.master.is_none()
    });
    s.make_master(B, 2, true);
    s.wait(&a, "A to learn B is master", master_is(B));
    s.wait(&b, "B to learn it is master", master_is(B));
    assert_eq!(b.status().master.unwrap().epoch, 2);

    // Another store's device hears nothing of it.
    assert_eq!(elsewhere.status().master, None);
}

#[test]
fn a_followers_command_is_executed_on_the_master() {
    let s = setup();
    let recorder = Arc::new(Recorder::default());
    let master = s.device(&s.token, STORE, A, Some(recorder.clone()));
    let follower = s.device(&s.token, STORE, B, None);
    s.make_master(A, 1, true);
    s.wait(&master, "A to be master", master_is(A));
    s.wait(&follower, "B to see A as master", master_is(A));

    let balances = s
        .runtime
        .block_on(follower.command(HubCommand::Balances))
        .expect("the master answers");
    assert_eq!(balances, json!({ "lightning_sats": 4242 }));
    // The master's own error comes back to the follower, named as the master's.
    let refused = s
        .runtime
        .block_on(follower.command(HubCommand::Pay {
            bolt11: "lnbcrt1".into(),
            amount_msat: None,
        }))
        .unwrap_err();
    assert_eq!(
        refused,
        HubError::Refused("the master device refused: no route to the payee".into())
    );
    assert_eq!(recorder.ran.lock().unwrap().len(), 2);
    assert_eq!(recorder.ran.lock().unwrap()[0], HubCommand::Balances);

    // The store API goes the same way: an invoice created over HTTP is made by the master.
    let created = s.create_invoice(
        &s.token,
        json!({ "amount_sat": 1500, "description": "tea", "expiry_secs": 600 }),
    );
    assert_eq!(created["bolt11"], "lnbcrt1500fake");
    assert_eq!(created["status"], "new");
    assert_eq!(
        recorder.ran.lock().unwrap()[2],
        HubCommand::CreateInvoice {
            amount_sat: 1500,
            description: "tea".into(),
            expiry_secs: 600
        }
    );
}

#[test]
fn a_dropped_connection_resumes() {
    let mut s = setup();
    let recorder = Arc::new(Recorder::default());
    let master = s.device(&s.token, STORE, A, Some(recorder.clone()));
    let follower = s.device(&s.token, STORE, B, None);
    s.make_master(A, 1, true);
    s.wait(&follower, "B to see A as master", master_is(A));

    // The server goes away (SIGKILL) and comes back on the same port and data directory.
    s.server.restart();
    for client in [&master, &follower] {
        s.wait(client, "a second session", |st| {
            st.connected && st.sessions >= 2
        });
    }
    // The lease is durable, so the restarted server still knows the master.
    s.wait(&follower, "B to see A as master again", master_is(A));
    let answer = s
        .runtime
        .block_on(follower.command(HubCommand::Balances))
        .expect("commands flow again after the reconnect");
    assert_eq!(answer["lightning_sats"], 4242);

    // A command made while disconnected goes out on the next connection and is answered.
    s.server.kill();
    s.wait(&follower, "B to notice the drop", |st| !st.connected);
    let follower = Arc::new(follower);
    let asked = s.runtime.spawn({
        let follower = follower.clone();
        async move { follower.command(HubCommand::Balances).await }
    });
    std::thread::sleep(Duration::from_millis(300));
    s.server.restart();
    let answer = s
        .runtime
        .block_on(asked)
        .unwrap()
        .expect("the command queued while offline is answered after the reconnect");
    assert_eq!(answer["lightning_sats"], 4242);
    assert!(follower.status().sessions >= 3);
    assert_eq!(
        recorder.ran.lock().unwrap().len(),
        2,
        "each command ran once"
    );
}

#[test]
fn a_command_with_no_master_online_fails_clearly() {
    let s = setup();
    let follower = s.device(&s.token, STORE, B, None);
    s.wait(&follower, "the welcome", |st| st.connected);

    let err = s
        .runtime
        .block_on(follower.command(HubCommand::Balances))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no master device is online for store \"shop\" (no device holds the store's lease; start the till on a device)"
    );

    // A holds the lease but is not connected.
    s.make_master(A, 1, true);
    s.wait(&follower, "B to see A as master", master_is(A));
    let err = s
        .runtime
        .block_on(follower.command(HubCommand::Balances))
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "no master device is online for store \"shop\" (device {A} holds the lease but is not connected)"
        )),
        "{err}"
    );

    // The store API says the same, with 503.
    let (status, body) = s.runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/stores/{STORE}/invoices", s.server.url()))
            .bearer_auth(&s.token)
            .json(&json!({ "amount_sat": 1000 }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    });
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("no master device is online for store \"shop\""),
        "{body}"
    );
}

#[test]
fn a_device_with_another_users_token_is_refused() {
    let s = setup();
    // The token of store "other" presented for store "shop".
    let intruder = s.device(&s.other_token, STORE, C, None);
    s.wait(&intruder, "the refusal", |st| st.refused.is_some());
    let refused = intruder.status().refused.unwrap();
    assert_eq!(
        refused,
        "refused: this token does not belong to store \"shop\"; use a token of that store"
    );
    assert!(!intruder.status().connected);

    // A token the server never issued, and a cashier token: refused before the upgrade.
    let forged = s.device(&format!("till_{}", "0".repeat(96)), STORE, C, None);
    s.wait(&forged, "the refusal", |st| st.refused.is_some());
    let refused = forged.status().refused.unwrap();
    assert!(refused.contains("401"), "{refused}");
    assert!(refused.contains("invalid bearer token"), "{refused}");
    assert!(
        !refused.contains("till_0000"),
        "errors never repeat a token: {refused}"
    );

    let till = s.device(&s.cashier_token, STORE, C, None);
    s.wait(&till, "the refusal", |st| st.refused.is_some());
    let refused = till.status().refused.unwrap();
    assert!(refused.contains("403"), "{refused}");
    assert!(refused.contains("cashier token"), "{refused}");
}

/// A heartbeat or timeout of zero (the hub's ping timer cannot tick at 0) or past a day (three
/// heartbeats would overflow) is refused before the server starts, naming the option; so is an
/// invitation that would expire at once.
#[test]
fn durations_out_of_bounds_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let run = |args: &[&str]| {
        std::process::Command::new(server_binary())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for (option, value) in [
        ("--heartbeat-secs", "0"),
        ("--heartbeat-secs", "1e19"),
        ("--command-timeout-secs", "-1"),
        ("--idle-timeout-secs", "0"),
    ] {
        let arg = format!("{option}={value}");
        let o = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            &arg,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{option} {value} started a server");
        assert!(
            err.contains(&format!("{option} must be more than 0 and at most 86400")),
            "{option} {value}: {err}"
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains("listening"));
    }
    let o = run(&[
        "invite",
        "create",
        "--store",
        "shop",
        "--data-dir",
        &data,
        "--public-url",
        "http://h",
        "--expires-in-secs",
        "0",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--expires-in-secs must be more than 0"),
        "{err}"
    );
}

/// The hub and the backup behind TLS, as an operator serves them (`https://`, a reverse proxy in
/// front of till-server): a device given the server's `https://` URL reaches the hub over `wss://`
/// and the VSS store over HTTPS once it trusts the certificate's CA, and refuses the certificate
/// otherwise. The trusting device runs as a child process with `SSL_CERT_FILE` naming the test CA
/// (the system's roots are read from there; the test cannot change its own environment).
#[test]
fn a_device_reaches_the_hub_and_its_backup_over_tls() {
    let s = setup();
    let front = s.runtime.block_on(TlsFront::start(s.server.addr()));
    let recorder = Arc::new(Recorder::default());
    let master = s.device(&s.token, STORE, A, Some(recorder.clone()));
    s.make_master(A, 1, true);
    s.wait(&master, "A to see itself as master", master_is(A));

    // Without the CA, the certificate is refused and nothing connects.
    let untrusting = {
        let _guard = s.runtime.enter();
        let mut config = HubConfig::new(front.url(), &s.token, STORE, C, None);
        config.max_backoff = Duration::from_millis(500);
        HubClient::start(config)
    };
    s.wait(&untrusting, "the certificate to be refused", |st| {
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("certificate"))
    });
    assert!(!untrusting.status().connected);

    // With it, a follower on wss:// commands the master and reads the backup over HTTPS.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tls_child_device", "--ignored", "--nocapture"])
        .env("SSL_CERT_FILE", till_tests::tls_front::fixture("ca.pem"))
        .env("TILL_TEST_TLS_URL", front.url())
        .env("TILL_TEST_TLS_TOKEN", &s.token)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(out.contains("1 passed"), "the child test ran: {out}");
    assert_eq!(
        *recorder.ran.lock().unwrap(),
        vec![HubCommand::Balances],
        "the follower's command ran on the master"
    );
}

/// The child of `a_device_reaches_the_hub_and_its_backup_over_tls`.
#[test]
#[ignore = "run by a_device_reaches_the_hub_and_its_backup_over_tls as its child process"]
fn tls_child_device() {
    let url = std::env::var("TILL_TEST_TLS_URL").unwrap();
    let token = std::env::var("TILL_TEST_TLS_TOKEN").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = HubConfig::new(url.clone(), &token, STORE, B, None);
        config.command_timeout = Duration::from_secs(10);
        let follower = HubClient::start(config);
        if let Err(last) = follower
            .wait_for(WAIT, |st| st.connected && master_is(A)(st))
            .await
        {
            panic!("no wss session with A as master: {last:?}");
        }
        let answer = follower.command(HubCommand::Balances).await.unwrap();
        assert_eq!(answer["lightning_sats"], 4242);

        let vss = till_vss::VssClient::new(
            format!("{url}/vss"),
            till_vss::BearerToken::new(&token).unwrap(),
            till_vss::ClientConfig::default(),
        )
        .unwrap();
        let (keys, _) = vss.list_all_key_versions(VSS_STORE, None).await.unwrap();
        assert!(
            !keys.is_empty(),
            "the head A's lease wrote is listed over HTTPS"
        );
    });
}

/// A payment whose update never reached the server (no event, as when the app restarted or the
/// till was handed off right after it) is reported at the master's next hub session, and turns
/// the invoice paid even though the server had expired it meanwhile.
#[test]
fn a_lost_paid_update_is_reported_again_and_wins_over_expiry() {
    let mut s = setup();
    let recorder = Arc::new(Recorder::default());
    let master = s.device(&s.token, STORE, A, Some(recorder.clone()));
    s.make_master(A, 1, true);
    s.wait(&master, "A to be master", master_is(A));
    let http = reqwest::Client::new();
    let invoices = format!("{}/api/v1/stores/{STORE}/invoices", s.server.url());
    let status = |s: &Setup| -> Value {
        s.runtime.block_on(async {
            http.get(format!("{invoices}/{}", "ab".repeat(32)))
                .bearer_auth(&s.cashier_token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    let created = s.create_invoice(
        &s.cashier_token,
        json!({ "amount_sat": 1500, "description": "tea", "expiry_secs": 1 }),
    );
    assert_eq!(created["id"], "ab".repeat(32));
    // The node received it, but no update went out; the server expires the invoice.
    recorder
        .received
        .lock()
        .unwrap()
        .push(([0xab; 32], Some(1_500_000)));
    let deadline = std::time::Instant::now() + WAIT;
    while status(&s)["status"] != "expired" {
        assert!(std::time::Instant::now() < deadline, "{}", status(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next session (here: the server restarted) reports the receipt.
    s.server.restart();
    s.wait(&master, "a second session", |st| {
        st.connected && st.sessions >= 2
    });
    while status(&s)["status"] != "paid" {
        assert!(std::time::Instant::now() < deadline, "{}", status(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    let paid = status(&s);
    assert_eq!(paid["received_msat"], 1_500_000, "{paid}");
}

/// A device that answers the hub's pings stays connected; one that goes silent (reads nothing, so
/// sends no pongs) is dropped after three heartbeats (0.5 s each here), and the store's master is
/// then offline: a follower's command fails saying so.
#[test]
fn a_silent_device_is_dropped_after_three_heartbeats() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = setup();
    s.make_master(A, 1, true);
    let follower = s.device(&s.token, STORE, B, None);
    let mut socket = s.runtime.block_on(async {
        let request = till_tests::shop::hub_request(&s.server, &s.token);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let hello = json!({ "type": "hello", "v": 1, "store": STORE, "device_id": A.to_string() });
        socket.send(Message::text(hello.to_string())).await.unwrap();
        socket
    });
    s.wait(&follower, "B to see A as master", master_is(A));
    // Reading answers the pings (tungstenite replies on read): 2.5 s, five heartbeats, stays open.
    let pings = s.runtime.block_on(async {
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(2500);
        while let Ok(frame) = tokio::time::timeout_at(until, socket.next()).await {
            match frame {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(_)) => {}
                other => panic!("the hub closed a device that answers its pings: {other:?}"),
            }
        }
        pings
    });
    assert!(pings >= 3, "{pings} pings in 2.5 s");
    // Silent for 3 s (six heartbeats): the server has closed the connection.
    std::thread::sleep(Duration::from_secs(3));
    let closed = s.runtime.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {} // pings sent before the drop
                Err(_) => return false,
            }
        }
    });
    assert!(closed, "the silent device's connection is still open");
    let err = s
        .runtime
        .block_on(follower.command(HubCommand::Balances))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("holds the lease but is not connected"),
        "{err}"
    );
}

/// Two server processes on the PostgreSQL database `url` (half-second heartbeats, 5 s command
/// timeout), and the owner token of store [`STORE`] in it.
fn two_processes(url: String) -> (String, TillServer, TillServer) {
    let binary = server_binary();
    let store = StoreArg::DatabaseUrl(url);
    let token = add_user(&binary, &store, STORE);
    let args = ["--heartbeat-secs", "0.5", "--command-timeout-secs", "5"];
    let one = TillServer::start(&binary, store.clone(), &args);
    let two = TillServer::start(&binary, store, &args);
    (token, one, two)
}

/// Two server processes in front of one PostgreSQL database serve one hub (DESIGN.md section 5:
/// stateless server processes): the master's device is connected to one process and a follower to
/// the other, and every path crosses between them: master changes written through either, a
/// follower's command and the master's refusal, the store API's invoice made by a master on the
/// other process, the invoice stream on the other process hearing it created and expired, a
/// handover, a master that holds the lease but is connected nowhere, and an answer kept for a
/// follower that went away and came back to the other process.
#[test]
fn two_server_processes_of_one_database_serve_one_hub() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Some(url) = till_tests::postgres::fresh_database() else {
        return;
    };
    let (token, one, two) = two_processes(url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rt = &runtime;

    let on_a = Arc::new(Recorder::default());
    let on_b = Arc::new(Recorder::default());
    let a = connect(rt, &one, &token, STORE, A, Some(on_a.clone()));
    let b = connect(rt, &two, &token, STORE, B, Some(on_b.clone()));
    wait_status(rt, &a, "A's welcome", |st| st.connected);
    wait_status(rt, &b, "B's welcome", |st| st.connected);

    // A's lease is written through process two; A, on process one, hears of it.
    make_master(rt, &two, &token, A, 1, true);
    wait_status(rt, &a, "A (on one) to learn it is master", master_is(A));
    wait_status(rt, &b, "B (on two) to learn A is master", master_is(A));

    // B's command goes from process two to A on process one, and the answer comes back.
    let balances = rt
        .block_on(b.command(HubCommand::Balances))
        .expect("the master on the other process answers");
    assert_eq!(balances, json!({ "lightning_sats": 4242 }));
    let refused = rt
        .block_on(b.command(HubCommand::Pay {
            bolt11: "lnbcrt1".into(),
            amount_msat: None,
        }))
        .unwrap_err();
    assert_eq!(
        refused,
        HubError::Refused("the master device refused: no route to the payee".into())
    );
    assert_eq!(on_a.ran.lock().unwrap().len(), 2, "each command ran once");
    assert!(on_b.ran.lock().unwrap().is_empty());

    // The store API on process two; the invoice stream on process one hears it created, then
    // expired by process two's timer.
    rt.block_on(async {
        let http = reqwest::Client::new();
        let events = http
            .get(format!(
                "{}/api/v1/stores/{STORE}/invoices/events",
                one.url()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(events.status().as_u16(), 200);
        let response = http
            .post(format!("{}/api/v1/stores/{STORE}/invoices", two.url()))
            .bearer_auth(&token)
            .json(&json!({ "amount_sat": 1500, "description": "tea", "expiry_secs": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let created: Value = response.json().await.unwrap();
        assert_eq!(created["bolt11"], "lnbcrt1500fake");
        let seen = till_tests::shop::read_events(events, 2).await;
        let changes: Vec<(&str, &str)> = seen
            .iter()
            .map(|e| (e["id"].as_str().unwrap(), e["status"].as_str().unwrap()))
            .collect();
        let id = created["id"].as_str().unwrap();
        assert_eq!(changes, [(id, "new"), (id, "expired")]);
    });
    assert_eq!(
        on_a.ran.lock().unwrap()[2],
        HubCommand::CreateInvoice {
            amount_sat: 1500,
            description: "tea".into(),
            expiry_secs: 1
        }
    );

    // A hands over to B, through process one; B, on process two, hears it and now runs A's
    // commands.
    make_master(rt, &one, &token, A, 1, false);
    make_master(rt, &one, &token, B, 2, true);
    wait_status(rt, &b, "B (on two) to learn it is master", master_is(B));
    wait_status(rt, &a, "A (on one) to learn B is master", master_is(B));
    let answer = rt
        .block_on(a.command(HubCommand::Balances))
        .expect("B answers A across the processes");
    assert_eq!(answer, json!({ "lightning_sats": 4242 }));
    assert_eq!(on_b.ran.lock().unwrap().as_slice(), [HubCommand::Balances]);

    // A follower (C, a bare WebSocket) asks process two, leaves before the slow answer, and
    // comes back to process one: the answer waits for it there.
    *on_b.delay.lock().unwrap() = Duration::from_millis(1500);
    let hello = json!({ "type": "hello", "v": 1, "store": STORE, "device_id": C.to_string() });
    let (to_two, to_one) = (hub_request(&two, &token), hub_request(&one, &token));
    let answer = rt.block_on(async {
        let (mut socket, _) = tokio_tungstenite::connect_async(to_two).await.unwrap();
        socket.send(Message::text(hello.to_string())).await.unwrap();
        let command =
            json!({ "type": "command", "v": 1, "id": "c-1", "command": { "kind": "balances" } });
        socket
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        socket.close(None).await.unwrap();
        drop(socket);
        let (mut socket, _) = tokio_tungstenite::connect_async(to_one).await.unwrap();
        socket.send(Message::text(hello.to_string())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(WAIT, socket.next())
                .await
                .expect("the kept answer in time")
                .expect("the connection stays open")
                .unwrap();
            if let Message::Text(text) = frame {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "result" {
                    return message;
                }
            }
        }
    });
    assert_eq!(answer["id"], "c-1", "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        answer["value"],
        json!({ "lightning_sats": 4242 }),
        "{answer}"
    );
    assert_eq!(on_b.ran.lock().unwrap().len(), 2);
    *on_b.delay.lock().unwrap() = Duration::ZERO;

    // B leaves while it holds the lease: A's command fails, naming B as not connected.
    rt.block_on(b.stop());
    let err = rt.block_on(a.command(HubCommand::Balances)).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "no master device is online for store \"shop\" (device {B} holds the lease but is not connected)"
        )),
        "{err}"
    );
}

/// A database restart cuts every server process's connections, the one each listens for notes on
/// included. Each listens again and reads what it may have missed meanwhile, so the hub goes on
/// across processes: a handover written through one process right after the restart reaches the
/// device on the other, and a command crosses again.
#[test]
fn the_shared_hub_goes_on_after_a_database_restart() {
    let Some(cluster) = till_tests::postgres::Cluster::private() else {
        return;
    };
    let (token, one, two) = two_processes(cluster.fresh_database());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rt = &runtime;
    let on_b = Arc::new(Recorder::default());
    let a = connect(rt, &one, &token, STORE, A, None);
    let b = connect(rt, &two, &token, STORE, B, Some(on_b.clone()));
    make_master(rt, &two, &token, A, 1, true);
    wait_status(rt, &a, "A (on one) to learn it is master", master_is(A));

    cluster.stop();
    cluster.start_again();
    // Process two's pool connects again on demand; its first writes may fail meanwhile.
    let write = |device, epoch, held| {
        rt.block_on(async {
            let until = tokio::time::Instant::now() + WAIT;
            loop {
                let result = till_tests::shop::try_write_head(
                    &two.vss_url(),
                    &token,
                    VSS_STORE,
                    device,
                    epoch,
                    held,
                )
                .await;
                match result {
                    Ok(()) => return,
                    Err(e) if tokio::time::Instant::now() < until => {
                        eprintln!("head write after the restart: {e}; again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("no head write accepted after the restart: {e}"),
                }
            }
        })
    };
    write(A, 1, false);
    write(B, 2, true);
    wait_status(rt, &b, "B (on two) to learn it is master", master_is(B));
    wait_status(
        rt,
        &a,
        "A (on one) to learn B is master, after the restart",
        master_is(B),
    );

    let answer = rt.block_on(async {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            match a.command(HubCommand::Balances).await {
                Ok(answer) => return answer,
                Err(e) if tokio::time::Instant::now() < until => {
                    eprintln!("command after the restart: {e}; again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no command crossed after the restart: {e}"),
            }
        }
    });
    assert_eq!(answer, json!({ "lightning_sats": 4242 }));
    let ran = on_b.ran.lock().unwrap();
    assert!(
        !ran.is_empty() && ran.iter().all(|c| *c == HubCommand::Balances),
        "{ran:?}"
    );
}
