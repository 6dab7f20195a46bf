// Till patch (see TILL-PATCH.md): a free-running timer for the processing of pending HTLCs.

//! LDK holds a received or forwarded HTLC until `ChannelManager::process_pending_htlc_forwards`
//! runs, which it asks to be called "in irregular, randomly-distributed intervals" so that the
//! timing of a payment tells an observer less. The background processor calls it when its own
//! forward timer (a log-normal delay, median 50 ms) has run out, but it only looks at that timer
//! when it wakes, and when an HTLC is pending it sleeps the whole delay again from every wake.
//! Each persistence of the manager, each completed monitor update, wakes it; in a payment these
//! come one after the other, so the HTLC waits a full delay counted from the last of them rather
//! than the rest of the delay it was meant to wait.
//!
//! This timer runs beside it: it draws its delays from the same distribution, one after the
//! other without being restarted by anything, and when one runs out with HTLCs pending it
//! processes them. Processing still happens at random intervals of the same law; the background
//! processor's own calls remain (LDK lets only one run at a time).
//!
//! It then hands out at once the events that processing made, a received payment's
//! `PaymentClaimable` above all (on which ldk-node claims the payment), and sends the messages
//! they queued. Left to the background processor, they would wait until it had persisted the
//! manager the forwards changed, a whole store write: about 1.2 ms on ldk-node's VSS store and
//! 2 ms on Till's, on loopback, between the HTLC being processed and the claim. LDK lets only one
//! caller process events at a time; a call made while the background processor is at it returns
//! at once and the processor hands out the new events before it returns. Events are still handed
//! out before the manager that made them is persisted, as the background processor does (an event
//! not yet persisted as handled is handed out again after a restart).
//!
//! The task stops only between two turns, when the node stops: LDK's event processing must not
//! be dropped halfway, or it would stay marked as running.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::event::EventHandler;
use crate::logger::Logger;
use crate::types::{ChannelManager, PeerManager};

/// The median delay, and the spread of its logarithm, of lightning-background-processor's
/// forward batches (`fwd_batch.rs`: log-normal, meanlog ln 50 ms, sdlog 0.5, cut at 200 ms, plus
/// up to 1 ms of microseconds).
const MEDIAN_MS: f64 = 50.0;
const SD_LOG: f64 = 0.5;
const MAX_MS: f64 = 200.0;

/// One delay drawn from that law.
pub fn next_delay() -> Duration {
	let mut rng = rand::rng();
	// Box-Muller: a standard normal from two uniforms in (0, 1].
	let u1: f64 = 1.0 - rng.random::<f64>();
	let u2: f64 = rng.random::<f64>();
	let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
	let ms = (MEDIAN_MS.ln() + SD_LOG * normal).exp().min(MAX_MS).round();
	Duration::from_millis(ms as u64) + Duration::from_micros(rng.random_range(0..1000))
}

/// Processes pending HTLCs each time a delay runs out, and then at once the events that made
/// (a received payment's `PaymentClaimable` above all), until the node stops. It stops only
/// between two turns: LDK's event processing must not be dropped halfway.
pub(crate) async fn run(
	channel_manager: Arc<ChannelManager>, event_handler: Arc<EventHandler<Arc<Logger>>>,
	peer_manager: Arc<PeerManager>, mut stop: tokio::sync::watch::Receiver<()>,
) {
	loop {
		tokio::select! {
			_ = stop.changed() => return,
			_ = tokio::time::sleep(next_delay()) => {},
		}
		if channel_manager.needs_pending_htlc_processing() {
			channel_manager.process_pending_htlc_forwards();
			channel_manager.process_pending_events_async(|e| event_handler.handle_event(e)).await;
			peer_manager.process_events();
		}
	}
}
