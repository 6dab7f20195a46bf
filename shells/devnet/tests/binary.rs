//! The `till-devnet` binary: help labelled as a development chain, usage errors, and `serve`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_till-devnet");

#[test]
fn help_says_it_is_a_development_chain() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("DEVELOPMENT chain"), "{help}");
    assert!(help.contains("serve [--listen ADDR]"), "{help}");
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["frobnicate"][..],
        &["serve", "--listen"],
        &["serve", "--port", "1"],
    ] {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    let output = Command::new(BIN)
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on"));
}

#[tokio::test]
async fn serve_answers_esplora_requests() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/blocks/tip/hash");
    let genesis = bitcoin::constants::genesis_block(bitcoin::Network::Regtest).block_hash();
    let deadline = Instant::now() + Duration::from_secs(20);
    let tip = loop {
        if let Ok(response) = reqwest::get(&url).await {
            break response.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the devnet did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(tip, genesis.to_string());
}
