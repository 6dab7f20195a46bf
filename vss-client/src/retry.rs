//! Retries of transient failures, with exponential backoff and jitter.

use rand::Rng;
use std::time::Duration;

/// How often and how patiently a call is retried after a transient failure (see
/// [`Error::is_transient`](crate::Error::is_transient)). Conflicts and other definite answers are
/// never retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts, the first one included; 1 disables retries.
    pub max_attempts: u32,
    /// The backoff before the first retry; it doubles for each further one.
    pub initial_backoff: Duration,
    /// The backoff never grows past this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms doubling up to 5 s: rides out a server restart of a few seconds.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries: every failure is returned at once.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry): "equal jitter", half the
    /// exponential step plus a uniformly random part of the other half, so that many clients failing
    /// together do not retry in lockstep, and no wait is ever near zero.
    pub(crate) fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_backoff);
        let half = exp / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.gen_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_within_bounds_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let first = policy.backoff(1, &mut rng);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3, &mut rng);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = policy.backoff(30, &mut rng);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }
}
