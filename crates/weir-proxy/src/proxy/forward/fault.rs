//! Fault injection (Istio's `fault`): a delay (`DI`) and/or an abort (`FI`), each with its
//! share of requests.

use weir_router::telemetry::ResponseFlags;
use weir_router::{Rule, random_value};

use super::super::failure::Failure;

/// Applies the rule's fault, if any: sleeps for a delay (adding `DI` to `flags`), or fails
/// with the abort status.
pub(crate) async fn inject(rule: &Rule, flags: &mut ResponseFlags) -> Result<(), Failure> {
    let Some(fault) = &rule.fault else {
        return Ok(());
    };
    if let Some((delay, share)) = fault.delay
        && chance(share)
    {
        tokio::time::sleep(delay).await;
        *flags |= ResponseFlags::DI;
    }
    if let Some((status, share)) = fault.abort
        && chance(share)
    {
        return Err(Failure::FaultAbort(status));
    }
    Ok(())
}

/// Whether an event with a share in millionths happens this time.
#[inline]
pub(crate) fn chance(per_million: u32) -> bool {
    per_million >= 1_000_000 || random_value() % 1_000_000 < u64::from(per_million)
}

#[cfg(test)]
mod tests {
    use super::chance;

    #[test]
    fn chance_in_millionths() {
        assert!((0..1000).all(|_| chance(1_000_000)));
        assert!((0..1000).all(|_| !chance(0)));
        let hits = (0..100_000).filter(|_| chance(250_000)).count();
        assert!((20_000..30_000).contains(&hits), "{hits}");
    }
}
