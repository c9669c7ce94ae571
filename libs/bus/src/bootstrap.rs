//! Making the bus: every stream, key-value bucket and job consumer Verity uses, with this
//! release's configuration. It is the admin credential's work (`verity bus init`, the devnet at
//! each start, the chart's bus-init Job), done before the services start: their credentials
//! may open what exists and use it, but neither create nor reconfigure a stream, nor make a
//! consumer anywhere but on the chain stream (ADR 0014, [`crate::follower`]). Running it again
//! changes nothing that is already right.

use std::time::Duration;

use async_nats::jetstream::Context;

use crate::{BusError, js_error, lease, proving};

/// What the bus is made for.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The job consumers to make, one per prover key ([`proving::consumer_name`]).
    pub job_consumers: Vec<String>,
    /// How long a prover may hold a job unacknowledged before it is delivered again (its
    /// workers extend it while they prove).
    pub job_ack_wait: Duration,
}

/// Makes (or brings to this release's configuration) every stream, bucket and job consumer of
/// `layout`; returns what it made or checked, one line each, for the operator.
pub async fn init(js: &Context, layout: &Layout) -> Result<Vec<String>, BusError> {
    let mut done = Vec::new();
    crate::ensure_chain_stream(js).await?;
    done.push(format!("stream {}", crate::CHAIN_STREAM));
    let (jobs, _) = proving::ensure_proving_streams(js).await?;
    done.extend(
        [
            proving::JOBS_STREAM,
            proving::DEAD_STREAM,
            proving::PROOFS_STREAM,
        ]
        .map(|s| format!("stream {s}")),
    );
    proving::ensure_finality_stream(js).await?;
    done.push(format!("stream {}", proving::FINALITY_STREAM));
    lease::lease_store(js).await?;
    lease::keep_lease_history(js).await?;
    lease::appointments_store(js).await?;
    done.push(format!(
        "key-value buckets {} and {}",
        lease::LEASE_BUCKET,
        lease::APPOINTMENTS_BUCKET
    ));
    for name in &layout.job_consumers {
        jobs.create_consumer(proving::job_consumer_config(name, layout.job_ack_wait))
            .await
            .map_err(|e| js_error("create job consumer", e))?;
        done.push(format!("job consumer {name} on {}", proving::JOBS_STREAM));
    }
    Ok(done)
}
