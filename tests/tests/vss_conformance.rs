//! The VSS conformance suite against till-server on redb, on PostgreSQL, and through ldk-node's
//! client `vss-client-ng`. Each case runs a real server process on loopback.

use till_tests::vss_conformance::{Backend, Client, Env};

macro_rules! runner {
    ($backend:expr, $client:expr) => {
        macro_rules! case {
            ($name:ident) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(env) = Env::start($backend, $client).await else {
                        return;
                    };
                    till_tests::vss_conformance::$name(&env).await;
                }
            };
        }
        till_tests::vss_conformance_cases!(case);
    };
}

mod redb {
    use super::*;
    runner!(Backend::Redb, Client::TillVss);
}

mod postgres {
    use super::*;
    runner!(Backend::Postgres, Client::TillVss);
}

mod vss_client_ng_on_redb {
    use super::*;
    runner!(Backend::Redb, Client::VssClientNg);
}
