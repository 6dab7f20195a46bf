//! The store invoice API of till-server (issue 7) against a real master device: a till-engine Node
//! (ldk-node on a redb event log) on the in-process devnet, connected to a real till-server
//! process through till-engine's hub client, and a customer's ldk-node node with a channel to it.
//! An invoice created over HTTP (by the cashier's token) is made by the master's node, paid by
//! the customer, and turns `paid` by itself, streamed to subscribers; another expires; a cashier
//! token cannot pay, refund or read balances, an owner token can.

use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use serde_json::{Value, json};
use std::str::FromStr;
use std::time::{Duration, Instant};
use till_engine::Node;
use till_tests::ldk::{WAIT, wait_until};
use till_tests::shop::{STORE, Shop, read_events};

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}/api/v1/stores/{STORE}{path}", self.base);
        let mut request = match method {
            "POST" => self.client.post(url),
            _ => self.client.get(url),
        }
        .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn wait_status(&self, token: &str, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, invoice) = self
                .send("GET", &format!("/invoices/{id}"), token, None)
                .await;
            assert_eq!(status, 200, "{invoice}");
            if invoice["status"] == want {
                return invoice;
            }
            assert!(
                Instant::now() < deadline,
                "invoice {id} never became {want}: {invoice}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[test]
fn invoices_are_created_by_the_master_paid_and_expired() {
    let started = Instant::now();
    let shop = Shop::start(&[]);
    eprintln!("shop ready after {:?}", started.elapsed());
    let (server, runtime, merchant, customer, owner, cashier, hub) = (
        &shop.server,
        &shop.runtime,
        &shop.merchant,
        &shop.customer,
        &shop.owner,
        &shop.cashier,
        &shop.hub,
    );
    let api = Api {
        base: server.url(),
        client: reqwest::Client::new(),
    };
    runtime.block_on(async {
        let events = api
            .client
            .get(format!(
                "{}/api/v1/stores/{STORE}/invoices/events",
                api.base
            ))
            .bearer_auth(cashier)
            .send()
            .await
            .unwrap();
        assert_eq!(events.status().as_u16(), 200);

        // The cashier creates an invoice; the master's node makes it.
        let (status, invoice) = api
            .send(
                "POST",
                "/invoices",
                cashier,
                Some(
                    json!({ "amount_sat": 20_000, "description": "flat white", "expiry_secs": 600 }),
                ),
            )
            .await;
        assert_eq!(status, 201, "{invoice}");
        assert_eq!(invoice["status"], "new");
        assert_eq!(invoice["amount_sat"], 20_000);
        let bolt11 = Bolt11Invoice::from_str(invoice["bolt11"].as_str().unwrap()).unwrap();
        assert_eq!(bolt11.amount_milli_satoshis(), Some(20_000_000));
        assert_eq!(
            bolt11
                .payee_pub_key()
                .copied()
                .unwrap_or_else(|| bolt11.recover_payee_pub_key()),
            merchant.info().node_id
        );
        let id = invoice["id"].as_str().unwrap().to_owned();
        let hash: &[u8] = bolt11.payment_hash().as_ref();
        assert_eq!(
            id,
            hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );

        // The customer pays; the status turns paid by itself.
        customer.bolt11_payment().send(&bolt11, None).unwrap();
        let paid = api.wait_status(cashier, &id, "paid").await;
        assert_eq!(paid["received_msat"], 20_000_000);
        assert!(paid["paid_at_ms"].as_i64().unwrap() >= paid["created_at_ms"].as_i64().unwrap());
        eprintln!("paid after {:?}", started.elapsed());

        // Expiry: a 2-second invoice nobody pays.
        let (status, short) = api
            .send(
                "POST",
                "/invoices",
                cashier,
                Some(json!({ "amount_sat": 700, "expiry_secs": 2 })),
            )
            .await;
        assert_eq!(status, 201, "{short}");
        let short_id = short["id"].as_str().unwrap().to_owned();
        let expired = api.wait_status(cashier, &short_id, "expired").await;
        assert_eq!(expired["paid_at_ms"], Value::Null);

        // The stream told subscribers every change: created, paid, created, expired.
        let seen = read_events(events, 4).await;
        let changes: Vec<(String, String)> = seen
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_owned(),
                    e["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            vec![
                (id.clone(), "new".to_owned()),
                (id.clone(), "paid".to_owned()),
                (short_id.clone(), "new".to_owned()),
                (short_id.clone(), "expired".to_owned()),
            ]
        );
        let (status, list) = api.send("GET", "/invoices", cashier, None).await;
        assert_eq!(status, 200);
        let statuses: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["expired", "paid"], "newest first");

        // A cashier token cannot pay, refund, read balances or list payments.
        let description =
            Bolt11InvoiceDescription::Direct(Description::new("change".into()).unwrap());
        let customer_invoice = customer
            .bolt11_payment()
            .receive(3_000_000, &description, 600)
            .unwrap();
        let payment_id = paid_payment_id(merchant);
        for (path, body) in [
            (
                "/pay",
                Some(json!({ "bolt11": customer_invoice.to_string() })),
            ),
            (
                "/refund",
                Some(json!({ "payment_id": payment_id, "bolt11": customer_invoice.to_string() })),
            ),
            ("/balances", None),
            ("/payments", None),
        ] {
            let method = if body.is_some() { "POST" } else { "GET" };
            let (status, answer) = api.send(method, path, cashier, body).await;
            assert_eq!(status, 403, "{path}: {answer}");
            assert!(
                answer["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("a cashier token may only create and view invoices;"),
                "{path}: {answer}"
            );
        }
        // ...and its VSS requests are refused too.
        let vss = till_vss::VssClient::new(
            server.vss_url(),
            till_vss::BearerToken::new(cashier.as_str()).unwrap(),
            till_vss::ClientConfig {
                retry: till_vss::RetryPolicy::never(),
                ..Default::default()
            },
        )
        .unwrap();
        let refused = vss
            .get_object("till-vss-store", "head")
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("cashier token"), "{refused}");

        // The owner refunds part of the sale through the master, once the merchant's side of the
        // channel (above its reserve) can carry it.
        wait_until("the merchant to be able to send the refund", || {
            merchant
                .channels()
                .iter()
                .any(|c| c.is_usable && c.next_outbound_htlc_limit_msat >= 3_000_000)
        });
        let (status, answer) = api
            .send(
                "POST",
                "/refund",
                owner,
                Some(json!({ "payment_id": payment_id, "bolt11": customer_invoice.to_string() })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        wait_until("the customer to receive the refund", || {
            customer.list_payments().iter().any(|p| {
                p.amount_msat == Some(3_000_000)
                    && p.status == ldk_node::payment::PaymentStatus::Succeeded
            })
        });
        let (status, balances) = api.send("GET", "/balances", owner, None).await;
        assert_eq!(status, 200, "{balances}");
        assert!(
            balances["lightning_sats"].as_u64().unwrap() > 0,
            "{balances}"
        );
    });
    assert!(hub.status().connected);
    eprintln!("done after {:?}", started.elapsed());
}

/// The id of the merchant's one received Lightning payment (hex); its on-chain funding is listed
/// as a payment too.
fn paid_payment_id(merchant: &Node) -> String {
    let received: Vec<_> = merchant
        .payments(till_engine::PaymentFilter {
            direction: Some(till_engine::PaymentDirection::Inbound),
            status: Some(till_engine::PaymentStatus::Succeeded),
        })
        .into_iter()
        .filter(|p| matches!(p.kind, till_engine::PaymentKind::Bolt11 { .. }))
        .collect();
    assert_eq!(received.len(), 1, "{received:?}");
    received[0]
        .id
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
