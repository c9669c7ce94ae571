//! Verity on Kubernetes, with kube-rs (ADR 0010):
//!
//! - [`scale`] and [`autoscaler`]: the prover pool's scaling policy and the controller that
//!   applies it to the prover Deployment's `scale` subresource (`verity-autoscaler`), for
//!   clusters without KEDA;
//! - [`lease`]: the sequencer's `coordination.k8s.io/v1` Lease, which records the active
//!   sequencer and its epoch in the cluster and fences a sequencer whose epoch was superseded.

pub mod autoscaler;
pub mod lease;
pub mod scale;

/// A Kubernetes client: in a pod, the service account's; elsewhere `$KUBECONFIG` or
/// `~/.kube/config`; or the API server at `url` (tests, `kubectl proxy`).
pub async fn client(url: Option<&str>) -> Result<kube::Client, kube::Error> {
    match url {
        Some(url) => {
            let uri = url
                .parse()
                .map_err(|e: http::uri::InvalidUri| kube::Error::Service(Box::new(e)))?;
            kube::Client::try_from(kube::Config::new(uri))
        }
        None => kube::Client::try_default().await,
    }
}

/// This pod's name (`$POD_NAME`, from the downward API), else the host name.
pub fn pod_name() -> Option<String> {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
}

/// The namespace this pod runs in (the service account's), when it runs in one.
pub fn pod_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_string())
        })
}
