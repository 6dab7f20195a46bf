//! The load of tests/benches/load.rs, shorter, as a test (issue 9): 200 simulated devices, each
//! shipping segments and its lease-carrying head with version checks to its own store, 20 stores
//! of them taken over mid-run by a second device, against one till-server per backend; then every
//! store is read back whole. No event may be lost or duplicated, and no first device may have a
//! write accepted after its store was taken over. Throughput and p99 latency are printed side by
//! side (the debug server here; the benchmark runs the release server).

#[path = "../benches/load.rs"]
#[allow(dead_code)]
mod load;

use load::{LoadConfig, print_table, run_load, start_server};
use std::time::Duration;
use till_tests::server::server_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_lose_nothing_and_fencing_stays_exact_on_both_backends() {
    let config = LoadConfig::new(Duration::from_secs(4));
    let binary = server_binary();
    let mut reports = Vec::new();
    for postgres in [false, true] {
        let Some((server, tokens, _dir)) = start_server(&binary, postgres, config.users) else {
            continue;
        };
        let name = if postgres { "postgres" } else { "redb" };
        let report = run_load(name, &server.vss_url(), &tokens, &config).await;
        assert!(report.errors.is_empty(), "{name}: {:?}", report.errors);
        assert_eq!(
            report.takeovers, 20,
            "{name}: every 10th of 200 stores taken over"
        );
        assert_eq!(
            report.fenced, report.takeovers,
            "{name}: every first device refused after its takeover"
        );
        // A floor far below what even a loaded machine does, so the checks above cover real
        // traffic; the figures themselves are the benchmark's business.
        assert!(
            report.uploads >= config.devices / 2,
            "{name}: only {} uploads in {:.1} s",
            report.uploads,
            report.seconds
        );
        assert_eq!(
            report.verified_segments, report.uploads,
            "{name}: one segment per upload"
        );
        reports.push(report);
    }
    print_table(&reports);
}
