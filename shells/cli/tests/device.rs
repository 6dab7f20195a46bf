//! The merchant's commands end to end, with real processes: a till-server, the devnet, a
//! customer's ldk-node node, and `till` on two devices (pair, init, run, onchain, channels,
//! invoice, pay, refund, balance, payments, status, handoff, takeover, restore, stop), with the
//! refusals a merchant meets (reused and expired invitations, a wrong confirmation, a wrong
//! mnemonic, a malformed invoice, takeover without --yes, an unreachable server). At the end,
//! every output and log file is searched for the mnemonic and the tokens.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldk_node::Event;
use ldk_node::bitcoin::Amount;
use ldk_node::lightning::ln::msgs::SocketAddress;
use serde_json::Value;
use till_tests::ldk::{
    CHANNEL_READY_CONFIRMATIONS, TestChain, TestNode, WAIT, fund_node, mine_and_sync, start_node,
    wait_event, wait_until,
};
use till_tests::server::{StoreArg, TillServer, run_command, server_binary};

/// Everything any `till` process printed, for the secret scan at the end.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<String>>);

impl Transcript {
    fn add(&self, text: &str) {
        self.0.lock().unwrap().push_str(text);
    }
}

struct Device {
    dir: PathBuf,
    esplora: String,
    transcript: Transcript,
    daemon: Option<Child>,
}

impl Device {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_till"));
        c.arg("--data-dir")
            .arg(&self.dir)
            .args(["--network", "regtest", "--esplora-url", &self.esplora])
            .args(args)
            .env_remove("TILL_DATA_DIR")
            .env_remove("TILL_SERVER_URL")
            .env_remove("TILL_TOKEN")
            .env_remove("RUST_BACKTRACE");
        c
    }

    /// Runs `till ARGS` with stdin closed (a non-interactive shell).
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run till");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        self.transcript.add(&String::from_utf8_lossy(&out.stdout));
        self.transcript.add(&String::from_utf8_lossy(&out.stderr));
        out
    }

    /// `till --json ARGS`, which must succeed; its stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "till {args:?} failed: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("till {args:?} printed no JSON ({e}): {}", stdout(&out)))
    }

    /// `till --json ARGS` printing one JSON value per line.
    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.status.success(), "till {args:?}: {}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Starts `till run`, its output going to the transcript.
    fn start_daemon(&mut self) {
        let mut child = self
            .command(&["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start till run");
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let transcript = self.transcript.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    transcript.add(&line);
                    transcript.add("\n");
                }
            });
        }
        self.daemon = Some(child);
    }

    /// The daemon's log file (for failure messages; it holds no secret).
    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/till.log")).unwrap_or_default()
    }

    fn status(&self) -> Value {
        self.json(&["status"])
    }

    fn wait_role(&self, role: &str) -> Value {
        let started = Instant::now();
        loop {
            let s = self.status();
            if s["role"] == role {
                return s;
            }
            assert!(
                started.elapsed() < WAIT,
                "{} never became {role}: {s}\n{}",
                self.dir.display(),
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `till stop`, then waits for the daemon to exit; returns its exit code.
    fn stop_daemon(&mut self) -> Option<i32> {
        let out = self.run(&["stop"]);
        assert!(out.status.success(), "till stop: {}", stderr(&out));
        self.wait_exit()
    }

    /// Waits for the daemon to exit by itself; returns its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.daemon.take().expect("a daemon");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(started.elapsed() < WAIT, "till run did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `till init`, answering its confirmation from the words it shows; `wrong` answers badly. With
/// a passphrase, `till init --passphrase`, giving it when asked. Returns the words and the
/// process's output.
fn init(device: &Device, wrong: bool, passphrase: Option<&str>) -> (String, Output) {
    let args: &[&str] = match passphrase {
        Some(_) => &["init", "--passphrase"],
        None => &["init"],
    };
    let mut child = device
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut words = Vec::new();
    let mut err = String::new();
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        err.push_str(&line);
        err.push('\n');
        let trimmed = line.trim();
        if let Some((n, word)) = trimmed.split_once(". ")
            && n.parse::<usize>().is_ok()
        {
            words.push(word.to_owned());
        }
        if let Some(rest) = line.strip_prefix("To confirm, type word ") {
            let n: usize = rest.split_whitespace().next().unwrap().parse().unwrap();
            let answer = if wrong { "wrong" } else { &words[n - 1] };
            writeln!(stdin, "{answer}").unwrap();
        }
        if line == "Type the passphrase and press Enter:" {
            writeln!(
                stdin,
                "{}",
                passphrase.expect("asked only with --passphrase")
            )
            .unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let out = Output {
        status: out.status,
        stdout: out.stdout,
        stderr: err.into_bytes(),
    };
    // init's stderr shows the words once, by design; only its stdout goes to the scan.
    device.transcript.add(&stdout(&out));
    (words.join(" "), out)
}

fn secret_token(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("secret.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["token"].as_str().unwrap().to_owned()
}

fn has_mnemonic(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("secret.toml"))
        .map(|t| t.contains("mnemonic"))
        .unwrap_or(false)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Waits for the customer to see a channel pending (`what` names it), then confirms the channel's
/// funding on the devnet and syncs the customer.
fn confirm_funding(chain: &TestChain, customer: &TestNode, what: &str) {
    let funding = wait_event(customer, what, |e| match e {
        Event::ChannelPending { funding_txo, .. } => Some(*funding_txo),
        _ => None,
    });
    chain.wait_for_tx(&funding.txid);
    mine_and_sync(chain, CHANNEL_READY_CONFIRMATIONS, &[customer]);
}

#[test]
fn a_merchant_runs_a_till_from_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    let binary = server_binary();
    let store = StoreArg::DataDir(work.path().join("server"));
    // The server's redb is locked while it runs, so invitations are made before it starts.
    let server_log = work.path().join("server.log");
    let mut pending = Vec::new();
    for ttl in ["3600", "3600", "1"] {
        pending.push(run_command(
            &binary,
            &store,
            &[
                "invite",
                "create",
                "--store",
                "shop",
                "--expires-in-secs",
                ttl,
                "--public-url",
                "http://placeholder",
            ],
        ));
    }
    std::thread::sleep(Duration::from_millis(1500)); // the 1 s invitation expires
    let server = TillServer::start_logged(&binary, store, &[], &server_log);
    let link = |printed: &String| {
        printed
            .lines()
            .last()
            .unwrap()
            .trim()
            .replacen("http://placeholder", &server.url(), 1)
    };
    let (link_a, link_b, link_expired) = (link(&pending[0]), link(&pending[1]), link(&pending[2]));

    let chain = TestChain::start();
    let transcript = Transcript::default();
    let device = |name: &str| Device {
        dir: work.path().join(name),
        esplora: chain.url(),
        transcript: transcript.clone(),
        daemon: None,
    };
    let mut a = device("device-a");
    let mut b = device("device-b");
    let c = device("device-c");

    // Pairing: once per link; a used or expired link, or something else, is refused clearly.
    let paired = a.json(&["pair", &link_a]);
    assert_eq!(paired["store"], "shop");
    let reused = c.run(&["pair", &link_a]);
    assert_eq!(reused.status.code(), Some(3), "{}", stderr(&reused));
    assert!(
        stderr(&reused).contains("already used"),
        "{}",
        stderr(&reused)
    );
    let expired = c.run(&["pair", &link_expired]);
    assert_eq!(expired.status.code(), Some(3), "{}", stderr(&expired));
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));
    let malformed = c.run(&["pair", "not-a-link"]);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(stderr(&malformed).contains("not an invitation link"));
    assert!(
        !c.dir.join("secret.toml").exists(),
        "refused pairings store nothing"
    );

    // init: a wrong confirmation saves nothing, nor does an empty passphrase; the right
    // confirmation saves the wallet, protected by a BIP39 passphrase.
    let (_, wrong) = init(&a, true, None);
    assert_eq!(wrong.status.code(), Some(3), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("nothing was saved"));
    assert!(!has_mnemonic(&a.dir));
    let (_, empty) = init(&a, false, Some(""));
    assert_eq!(empty.status.code(), Some(2), "{}", stderr(&empty));
    assert!(stderr(&empty).contains("no passphrase was given"));
    assert!(!has_mnemonic(&a.dir));
    let passphrase = "till passphrase 7f3a";
    let (words, ok) = init(&a, false, Some(passphrase));
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(words.split(' ').count(), 12);
    assert!(has_mnemonic(&a.dir));

    // The merchant's device runs; a listening address lets the customer open a channel to it.
    let listen = till_tests::ldk::free_address();
    let mut toml_text = std::fs::read_to_string(a.dir.join("till.toml")).unwrap();
    toml_text.push_str(&format!("listen = \"{listen}\"\n"));
    std::fs::write(a.dir.join("till.toml"), toml_text).unwrap();
    a.start_daemon();
    let status = a.wait_role("master");
    assert_eq!(status["lease"]["epoch"], 1);
    assert_eq!(status["daemon"], true);
    let info = a.json(&["info"]);
    let merchant_id = info["node_id"].as_str().unwrap().to_owned();

    // On-chain: an address, funds from the faucet, a sync.
    let address = a.json(&["onchain", "address"])["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let address: ldk_node::bitcoin::Address = address
        .parse::<ldk_node::bitcoin::Address<_>>()
        .unwrap()
        .assume_checked();
    chain.faucet(&address, Amount::from_sat(200_000));
    chain.mine(1);
    wait_until("the merchant's on-chain funds", || {
        a.json(&["onchain", "sync"]);
        a.json(&["balance"])["onchain_spendable_sats"]
            .as_u64()
            .unwrap_or(0)
            >= 100_000
    });

    // A customer opens a channel to the merchant and pushes some of it over.
    let customer = start_node(&chain, "customer");
    fund_node(&chain, &customer, Amount::from_sat(1_000_000));
    let listen: SocketAddress = listen.to_string().parse().unwrap();
    customer
        .open_channel(
            merchant_id.parse().unwrap(),
            listen,
            500_000,
            Some(100_000_000),
            None,
        )
        .unwrap();
    confirm_funding(&chain, &customer, "ChannelPending");
    wait_until("the channel to be usable on both sides", || {
        a.json(&["onchain", "sync"]);
        customer.list_channels().iter().any(|ch| ch.is_usable)
            && a.json_lines(&["channels", "list"])
                .iter()
                .any(|ch| ch["usable"] == true)
    });

    // The merchant opens a channel of its own to the customer; a malformed peer is refused.
    let bad_peer = a.run(&["channels", "open", "not-a-peer", "100000"]);
    assert_eq!(bad_peer.status.code(), Some(2), "{}", stderr(&bad_peer));
    assert!(
        stderr(&bad_peer).contains("is not a peer"),
        "{}",
        stderr(&bad_peer)
    );
    let peer = format!("{}@{}", customer.node_id(), customer.listen);
    let opened = a.json(&["channels", "open", &peer, "100000"]);
    let opened_id = opened["user_channel_id"].as_str().unwrap().to_owned();
    confirm_funding(&chain, &customer, "the merchant's ChannelPending");
    wait_until("the merchant's own channel to be usable", || {
        a.json(&["onchain", "sync"]);
        a.json_lines(&["channels", "list"])
            .iter()
            .any(|ch| ch["user_channel_id"] == opened_id.as_str() && ch["usable"] == true)
    });

    // Take a payment, make one, refund one.
    let invoice = a.json(&["invoice", "20000", "--description", "coffee"]);
    let bolt11: ldk_node::lightning_invoice::Bolt11Invoice =
        invoice["bolt11"].as_str().unwrap().parse().unwrap();
    customer.bolt11_payment().send(&bolt11, None).unwrap();
    wait_until("the merchant to see the payment", || {
        a.json_lines(&["payments"])
            .iter()
            .any(|p| p["payment_id"] == invoice["payment_id"] && p["status"] == "succeeded")
    });
    let customer_invoice = customer
        .bolt11_payment()
        .receive(
            5_000_000,
            &ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
                ldk_node::lightning_invoice::Description::new("change".into()).unwrap(),
            ),
            3600,
        )
        .unwrap();
    let paid = a.json(&["pay", &customer_invoice.to_string()]);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    let malformed = a.run(&["pay", "lnbc1notaninvoice"]);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(stderr(&malformed).contains("not a BOLT11 invoice"));
    let refund_invoice = customer
        .bolt11_payment()
        .receive(
            10_000_000,
            &ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
                ldk_node::lightning_invoice::Description::new("refund".into()).unwrap(),
            ),
            3600,
        )
        .unwrap();
    let refund = a.json(&[
        "refund",
        invoice["payment_id"].as_str().unwrap(),
        &refund_invoice.to_string(),
    ]);
    assert!(refund["payment_id"].as_str().is_some(), "{refund}");
    let balance = a.json(&["balance"]);
    assert!(balance["lightning_sats"].as_u64().unwrap() > 0, "{balance}");

    // A second device restores: a wrong mnemonic is refused and changes nothing.
    b.json(&["pair", &link_b]);
    let other = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
                 abandon abandon about\n";
    let refused = b.run_with_stdin(&["restore"], other);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("no backup for this mnemonic"));
    assert!(!has_mnemonic(&b.dir));
    let invalid = b.run_with_stdin(&["restore"], "three wrong words\n");
    assert_eq!(invalid.status.code(), Some(2), "{}", stderr(&invalid));
    // The right words without the passphrase, or with another one, derive another backup.
    for (args, input) in [
        (&["restore"][..], format!("{words}\n")),
        (
            &["restore", "--passphrase"][..],
            format!("{words}\n{passphrase}x\n"),
        ),
    ] {
        let refused = b.run_with_stdin(args, &input);
        assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
        assert!(
            stderr(&refused).contains("a wrong mnemonic or passphrase"),
            "{}",
            stderr(&refused)
        );
        assert!(!has_mnemonic(&b.dir));
    }
    let restored = b.run_with_stdin(
        &["--json", "restore", "--passphrase"],
        &format!("{words}\n{passphrase}\n"),
    );
    assert!(restored.status.success(), "{}", stderr(&restored));
    let restored: Value = serde_json::from_slice(&restored.stdout).unwrap();
    assert!(restored["last_seq"].as_u64().unwrap() > 0, "{restored}");

    // A follower's commands go through the hub to the master.
    let via_hub = b.json(&["invoice", "1000"]);
    assert!(via_hub["bolt11"].as_str().unwrap().starts_with("lnbcrt"));
    let payments = b.json_lines(&["payments"]);
    assert!(
        payments
            .iter()
            .any(|p| p["payment_id"] == invoice["payment_id"])
    );

    // Takeover without --yes in a non-interactive shell is refused; nothing changes.
    let refused = b.run(&["takeover"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert_eq!(a.status()["role"], "master");

    // Handoff A -> B: B's daemon takes the lease; A follows and acts through the hub.
    b.start_daemon();
    b.wait_role("follower");
    // Its first sync pulls what A did since the restore, and the daemon says where it stands.
    wait_until("B's daemon to say it is in step with the backup", || {
        b.daemon_log().contains("in step with the backup: at seq ")
    });
    let handed = a.run(&["handoff"]);
    assert!(handed.status.success(), "{}", stderr(&handed));
    b.wait_role("master");
    wait_until("the server's lease to name B at epoch 2", || {
        let s = b.status();
        s["lease"]["epoch"] == 2 && s["lease"]["device"] == s["device_id"]
    });
    assert_eq!(a.status()["role"], "follower");
    let through_b = a.json(&["invoice", "3000"]);
    let bolt11: ldk_node::lightning_invoice::Bolt11Invoice =
        through_b["bolt11"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        bolt11.recover_payee_pub_key().to_string(),
        merchant_id,
        "device B runs the same node"
    );

    // The replica answers without a master.
    let replica = a.json(&["balance", "--replica"]);
    assert_eq!(replica["source"], "replica");
    assert!(replica["lightning_sats"].as_u64().unwrap() > 0, "{replica}");
    let replica_payments = a.json_lines(&["payments", "--replica"]);
    assert!(
        replica_payments
            .iter()
            .any(|p| p["payment_id"] == invoice["payment_id"] && p["status"] == "succeeded")
    );

    // A confirmed takeover while B runs: A takes the lease; B is fenced at its next write and
    // its daemon stops with exit code 3.
    let took = a.json(&["takeover", "--yes"]);
    assert_eq!(took["role"], "master", "{took}");
    a.wait_role("master");
    wait_until("the server's lease to name A at epoch 3", || {
        a.status()["lease"]["epoch"] == 3
    });
    let _ = b.run(&["invoice", "100"]); // B's next write meets the fence
    assert_eq!(b.wait_exit(), Some(3), "B's daemon stops, refused");
    assert!(
        transcript.0.lock().unwrap().contains("fenced"),
        "B says it was fenced"
    );

    // From the new master: send on chain, close the channel cooperatively.
    let customer_address = customer.onchain_payment().new_address().unwrap();
    let sent = a.json(&["onchain", "send", &customer_address.to_string(), "10000"]);
    assert_eq!(sent["txid"].as_str().map(str::len), Some(64), "{sent}");
    let mut usable = None;
    wait_until("the channel to be usable on the new master", || {
        usable = a
            .json_lines(&["channels", "list"])
            .into_iter()
            .find(|c| c["usable"] == true);
        usable.is_some()
    });
    let channel = usable.unwrap();
    a.json(&[
        "channels",
        "close",
        channel["user_channel_id"].as_str().unwrap(),
        channel["counterparty"].as_str().unwrap(),
    ]);
    wait_event(&customer, "ChannelClosed", |e| match e {
        Event::ChannelClosed { .. } => Some(()),
        _ => None,
    });

    // Stop; with no server reachable, a command says so and exits 1.
    assert_eq!(a.stop_daemon(), Some(0));
    let unreachable = a.run(&["--server-url", "http://127.0.0.1:9", "invoice", "100"]);
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        stderr(&unreachable)
    );
    assert!(
        stderr(&unreachable).contains("cannot reach the till-server"),
        "{}",
        stderr(&unreachable)
    );
    drop(server);

    // No mnemonic, token or invitation code in any output or log file.
    let mut secrets = vec![
        words.clone(),
        passphrase.to_owned(),
        secret_token(&a.dir),
        secret_token(&b.dir),
    ];
    for link in [&link_a, &link_b, &link_expired] {
        secrets.push(link.rsplit('/').next().unwrap().to_owned());
    }
    let word_list: Vec<&str> = words.split(' ').collect();
    for window in word_list.windows(4) {
        secrets.push(window.join(" "));
    }
    let mut haystacks = vec![("outputs".to_owned(), transcript.0.lock().unwrap().clone())];
    let mut files = Vec::new();
    for dir in [&a.dir, &b.dir, &c.dir] {
        files_under(&dir.join("logs"), &mut files);
        files_under(&dir.join("ldk"), &mut files);
    }
    files.push(server_log.clone());
    assert!(files.len() >= 4, "the log files exist: {files:?}");
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        haystacks.push((file.display().to_string(), text));
    }
    for (name, text) in &haystacks {
        assert!(!text.is_empty() || name != "outputs");
        for (i, secret) in secrets.iter().enumerate() {
            assert!(
                !text.contains(secret.as_str()),
                "secret #{i} appears in {name}"
            );
        }
    }
}
