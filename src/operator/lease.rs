//! Leader election with a `coordination.k8s.io/v1` Lease, so two controller replicas are safe:
//! only the holder reconciles. The decision is a pure function of the Lease as read; the loop
//! writes it with the read `resourceVersion` (optimistic concurrency: of two replicas racing
//! for an expired Lease, the API server accepts one write and refuses the other with 409).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and renews it.
    Wait,
}

pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            match &spec.renew_time {
                Some(t) if t.0.as_second() + duration > now.as_second() => Decision::Wait,
                _ => Decision::Acquire,
            }
        }
    }
}

/// The Lease after `decision` by `me` at `now` (None for `Wait`).
pub fn next(
    old: Option<&Lease>,
    decision: Decision,
    me: &str,
    now: Timestamp,
    duration_s: i32,
) -> Option<LeaseSpec> {
    let spec = old.and_then(|l| l.spec.clone()).unwrap_or_default();
    match decision {
        Decision::Wait => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration_s),
            ..spec
        }),
        Decision::Acquire => Some(LeaseSpec {
            holder_identity: Some(me.to_string()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration_s),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(old.is_some())),
            ..spec
        }),
    }
}

/// One round: read, decide, write. Returns whether we hold the Lease afterwards.
pub async fn round(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    duration_s: i32,
) -> Result<bool, kube::Error> {
    let old = api.get_opt(name).await?;
    let now = Timestamp::now();
    let decision = decide(old.as_ref().and_then(|l| l.spec.as_ref()), me, now);
    let Some(spec) = next(old.as_ref(), decision, me, now, duration_s) else {
        return Ok(false);
    };
    let result = match old {
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(name, &PostParams::default(), &lease).await
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        // Someone else wrote first (409) or created it (409 AlreadyExists): not ours.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Renews every `duration/3`; sets `leader` while held. Returns when leadership is lost after
/// having been held (the caller stops reconciling and exits, to start again as a follower).
pub async fn hold(
    api: Api<Lease>,
    name: String,
    me: String,
    duration_s: i32,
    leader: Arc<AtomicBool>,
) -> String {
    let period = Duration::from_secs(u64::try_from(duration_s / 3).unwrap_or(5).max(1));
    loop {
        let held = match round(&api, &name, &me, duration_s).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "lease round failed");
                // Cannot renew: still leader only until the lease would expire; be safe and
                // count an error as a lost renewal when we held it.
                false
            }
        };
        let was = leader.swap(held, Ordering::SeqCst);
        if was && !held {
            return format!("lost the leader lease {name}");
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn only_an_expired_or_free_lease_is_taken() {
        let now = Timestamp::from_second(1000).unwrap();
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(decide(Some(&spec(None, 0)), "a", now), Decision::Acquire);
        assert_eq!(
            decide(Some(&spec(Some("a"), 990)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 990)), "a", now),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 985)), "a", now),
            Decision::Acquire,
            "expired at 1000"
        );
    }

    #[test]
    fn acquiring_counts_a_transition_and_renewing_keeps_the_holder() {
        let now = Timestamp::from_second(1000).unwrap();
        let old = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                lease_transitions: Some(3),
                ..spec(Some("b"), 900)
            }),
        };
        let taken = next(Some(&old), Decision::Acquire, "a", now, 15).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));
        let renewed = next(
            Some(&Lease {
                spec: Some(taken.clone()),
                ..old.clone()
            }),
            Decision::Renew,
            "a",
            now,
            15,
        )
        .unwrap();
        assert_eq!(renewed.holder_identity.as_deref(), Some("a"));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert!(next(Some(&old), Decision::Wait, "a", now, 15).is_none());
    }

    #[tokio::test]
    async fn two_replicas_against_one_api_server_one_leader_at_a_time() {
        use crate::operator::fixtures::FakeApi;
        let fake = FakeApi::default();
        let (client, _server) = fake.start();
        let api: Api<Lease> = Api::namespaced(client, "ns");
        assert!(round(&api, "cnnpc", "a", 15).await.unwrap(), "a creates it");
        assert!(
            !round(&api, "cnnpc", "b", 15).await.unwrap(),
            "a renews it: b waits"
        );
        assert!(round(&api, "cnnpc", "a", 15).await.unwrap(), "a renews");
        // A stale write (read before a's renewal) is refused.
        let mut stale = api.get("cnnpc").await.unwrap();
        assert!(round(&api, "cnnpc", "a", 15).await.unwrap());
        stale.spec.as_mut().unwrap().holder_identity = Some("b".into());
        assert!(matches!(
            api.replace("cnnpc", &PostParams::default(), &stale).await,
            Err(kube::Error::Api(e)) if e.code == 409
        ));
        // a stops renewing: once expired, b takes over.
        let path = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/cnnpc";
        let mut l = fake.get(path).unwrap();
        l["spec"]["renewTime"] = serde_json::json!("2020-01-01T00:00:00.000000Z");
        fake.put(path, l);
        assert!(
            round(&api, "cnnpc", "b", 15).await.unwrap(),
            "b takes the expired lease"
        );
        let held = api.get("cnnpc").await.unwrap().spec.unwrap();
        assert_eq!(held.holder_identity.as_deref(), Some("b"));
        assert_eq!(held.lease_transitions, Some(1));
        assert!(
            !round(&api, "cnnpc", "a", 15).await.unwrap(),
            "a finds b holding it"
        );
    }
}
