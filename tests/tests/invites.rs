//! Invitation links of till-server (issue 7): `till-server invite create` prints a single-use,
//! expiring link alone on its last line; redeeming it pairs a device, which gets a working owner
//! token, its store and the server's details; a second redeem and an expired link fail, each
//! with a message that says so. A real server process on loopback, on redb.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use till_tests::server::{StoreArg, TillServer, run_command, server_binary};

const PUBLIC_URL: &str = "https://till.example.test";

/// Runs `invite create` and returns the link, checking it is alone on the last line.
fn create_invite(binary: &Path, store: &StoreArg, name: &str, expires_in_secs: &str) -> String {
    let stdout = run_command(
        binary,
        store,
        &[
            "invite",
            "create",
            "--store",
            name,
            "--public-url",
            PUBLIC_URL,
            "--expires-in-secs",
            expires_in_secs,
        ],
    );
    let last = stdout.lines().last().expect("invite create prints a link");
    assert!(
        last.starts_with(&format!("{PUBLIC_URL}/invite/")) && !last.contains(' '),
        "the link is alone on the last line: {stdout:?}"
    );
    last.to_owned()
}

async fn redeem(server: &TillServer, code: &str, device: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/invites/redeem", server.url()))
        .json(&json!({ "code": code, "device_id": device }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Lists `store`'s invoices with `token`: the status and the JSON body.
async fn invoices(server: &TillServer, store: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/stores/{store}/invoices", server.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[test]
fn an_invitation_redeems_once_and_not_after_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let binary = server_binary();
    let store = StoreArg::DataDir(dir.path().to_owned());
    // The store "bakery" does not exist yet: invite create makes it.
    let link = create_invite(&binary, &store, "bakery", "3600");
    let short = create_invite(&binary, &store, "bakery", "1");
    let code = link.rsplit('/').next().unwrap().to_owned();
    let server = TillServer::start(&binary, store, &["--public-url", PUBLIC_URL]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let device = "d1".repeat(16);

    runtime.block_on(async {
        let (status, paired) = redeem(&server, &code, &device).await;
        assert_eq!(status, 200, "{paired}");
        assert_eq!(paired["store"], "bakery");
        assert_eq!(paired["role"], "owner");
        assert_eq!(paired["device_id"], device.as_str());
        assert_eq!(paired["server_url"], PUBLIC_URL);
        assert_eq!(paired["vss_url"], format!("{PUBLIC_URL}/vss"));
        assert_eq!(paired["hub_url"], "wss://till.example.test/api/v1/hub");
        let token = paired["token"].as_str().unwrap();

        // The token works: the store API answers for the store (no invoices yet)...
        let (status, list) = invoices(&server, "bakery", token).await;
        assert_eq!(status, 200);
        assert_eq!(list, json!([]));
        // ...and so does the VSS store (an owner token).
        let vss = till_vss::VssClient::new(
            server.vss_url(),
            till_vss::BearerToken::new(token).unwrap(),
            till_vss::ClientConfig::default(),
        )
        .unwrap();
        assert!(matches!(
            vss.get_object("s", "k").await,
            Err(till_vss::Error::NoSuchKey { .. })
        ));

        // Twice: refused, and the whole link is accepted as the code too.
        let (status, body) = redeem(&server, &link, &"d2".repeat(16)).await;
        assert_eq!(status, 410);
        assert_eq!(
            body["error"],
            "this invitation was already used; invitations work once, ask the operator for a new one"
        );

        // Expired.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, body) = redeem(&server, &short, &device).await;
        assert_eq!(status, 410);
        assert_eq!(
            body["error"],
            "this invitation has expired; ask the operator for a new one"
        );

        // Unknown, and a malformed device id.
        let (status, body) = redeem(&server, &"0".repeat(48), &device).await;
        assert_eq!(status, 404);
        assert_eq!(
            body["error"],
            "this invitation code is not known to this server; check the link"
        );
        let (status, body) = redeem(&server, &code, "phone").await;
        assert_eq!(status, 400);
        assert_eq!(
            body["error"],
            "device_id must be 32 hex digits (the device's id)"
        );
    });
}

/// Issue 7 on redb: `invite create --data-dir` while a server runs on that directory (which holds
/// the store file locked) is answered by the server through `<data-dir>/admin.sock`, mode 0600;
/// the link, built on the server's own public URL when none is given, redeems on that server.
/// Killed, the server leaves a stale socket: `invite create` then opens the file itself, and the
/// restarted server redeems that link too.
#[test]
fn an_invitation_is_created_while_the_redb_server_runs() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let binary = server_binary();
    let data = dir.path().join("data");
    let store = StoreArg::DataDir(data.clone());
    let mut server = TillServer::start(&binary, store.clone(), &["--public-url", PUBLIC_URL]);
    let socket = data.join("admin.sock");
    let mode = std::fs::metadata(&socket)
        .expect("the running server's admin socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only the server's user may use it");

    // No --public-url (and no TILL_PUBLIC_URL): the running server's own.
    let output = std::process::Command::new(&binary)
        .args(["invite", "create", "--store", "cafe", "--data-dir"])
        .arg(&data)
        .env_remove("TILL_PUBLIC_URL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "invite create while the server runs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let link = stdout.lines().last().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{PUBLIC_URL}/invite/")) && !link.contains(' '),
        "the link, alone on the last line, on the server's URL: {stdout:?}"
    );
    // An explicit --public-url is used as given.
    let other = create_invite(&binary, &store, "cafe", "3600");
    // A bad store name is refused with the reason, and nothing is created.
    let output = std::process::Command::new(&binary)
        .args(["invite", "create", "--store", "", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("it is empty"), "{stderr}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let code = link.rsplit('/').next().unwrap();
        let (status, paired) = redeem(&server, code, &"e1".repeat(16)).await;
        assert_eq!(status, 200, "{paired}");
        assert_eq!(paired["store"], "cafe");
        let token = paired["token"].as_str().unwrap();
        let (status, _) = invoices(&server, "cafe", token).await;
        assert_eq!(status, 200, "the paired device's token works");
        let (status, paired) = redeem(&server, &other, &"e2".repeat(16)).await;
        assert_eq!(status, 200, "{paired}");
        // Single use holds for these too.
        let (status, _) = redeem(&server, code, &"e3".repeat(16)).await;
        assert_eq!(status, 410);
    });

    // Killed (SIGKILL), the server leaves its socket behind; nobody listens on it, so invite
    // create opens the store file itself.
    server.kill();
    assert!(socket.exists(), "a killed server leaves a stale socket");
    let offline = create_invite(&binary, &store, "cafe", "3600");
    server.restart();
    runtime.block_on(async {
        let (status, paired) = redeem(&server, &offline, &"e4".repeat(16)).await;
        assert_eq!(status, 200, "{paired}");
    });
    // The restarted server listens on the socket again.
    let again = create_invite(&binary, &store, "cafe", "3600");
    runtime.block_on(async {
        let (status, paired) = redeem(&server, &again, &"e5".repeat(16)).await;
        assert_eq!(status, 200, "{paired}");
    });
}
