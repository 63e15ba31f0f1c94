//! `cnnpc bench runtime` on a generated model, small counts: every part is measured, and the
//! load test's answers are all checked against the unsplit model.

use std::time::Duration;

use cnnpc::bench::runtime::{markdown, run, RuntimeBenchOptions};
use cnnpc::testkit::models as testmodels;

fn small() -> RuntimeBenchOptions {
    RuntimeBenchOptions {
        hop_sizes: vec![1_000, 100_000],
        hop_samples: 5,
        throughput_requests: 8,
        throughput_rounds: 2,
        load_clients: 16,
        load_requests: 96,
        load_deadline: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_is_measured_and_the_sized_load_test_answers_every_request_correctly() {
    let model = testmodels::chain_model_bytes();
    let mut told = Vec::new();
    let r = run("chain", &model, &small(), &mut |w| told.push(w.to_string()))
        .await
        .unwrap();

    assert_eq!(r.hop.len(), 2);
    for (h, want) in r.hop.iter().zip([1_000, 100_000]) {
        assert!(
            h.tensor_bytes >= want && h.tensor_bytes < want + 16,
            "{h:?}"
        );
        assert!(
            h.frame_bytes > h.tensor_bytes,
            "a frame carries a header: {h:?}"
        );
        assert!(h.one_tier_p50_ms > 0.0 && h.two_tier_p50_ms > 0.0, "{h:?}");
        assert!(h.hop_overhead_ms.is_finite() && h.codec_ms > 0.0, "{h:?}");
    }

    let callers: Vec<_> = r
        .throughput
        .iter()
        .map(|t| (t.direct_callers, t.server_callers))
        .collect();
    let mut want = vec![(1, 1)];
    if r.cores > 1 {
        want.push((r.cores, r.cores));
    }
    want.push((r.cores, 2 * r.cores));
    assert_eq!(callers, want);
    for t in &r.throughput {
        assert!(t.direct_rps > 0.0 && t.server_rps > 0.0, "{t:?}");
        // The ratio is a median of per-round ratios (paired halves): an observed round's, so
        // with two rounds it is one end of their spread.
        assert!(t.ratio_min > 0.0 && t.ratio_min <= t.ratio_max, "{t:?}");
        assert!(t.ratio == t.ratio_min || t.ratio == t.ratio_max, "{t:?}");
    }
    assert!(r.model_ms_per_image > 0.0);

    let sized = &r.load[0];
    assert_eq!(
        (
            sized.scenario.as_str(),
            sized.clients,
            sized.tier_max_concurrency
        ),
        ("sized", 16, 16)
    );
    assert_eq!(sized.ok, 96, "{sized:?}");
    assert_eq!(
        (
            sized.shed,
            sized.errors,
            sized.wrong_answers,
            sized.not_sent
        ),
        (0, 0, 0, 0)
    );
    assert!(sized.p50_ms > 0.0 && sized.p99_ms >= sized.p50_ms && sized.max_ms >= sized.p99_ms);
    assert!(r.targets.load_test_zero_errors);

    // At the default concurrency the excess is shed with 503 and retried after Retry-After:
    // every request is still answered, correctly, and nothing fails.
    let shedding = &r.load[1];
    assert_eq!(shedding.tier_max_concurrency, 4);
    assert_eq!(
        (shedding.ok, shedding.gave_up, shedding.not_sent),
        (96, 0, 0),
        "{shedding:?}"
    );
    assert_eq!(
        (shedding.errors, shedding.wrong_answers),
        (0, 0),
        "{shedding:?}"
    );
    assert!(shedding.error_kinds.is_empty(), "{shedding:?}");

    assert!(told.iter().any(|w| w.contains("load test")), "{told:?}");
    let md = markdown(&r);
    assert_eq!(md.matches("| sized |").count(), 1, "{md}");
    assert_eq!(md.matches("KB |").count(), 2, "{md}");
}

#[tokio::test]
async fn empty_counts_are_refused_before_anything_starts() {
    let model = testmodels::chain_model_bytes();
    let opts = RuntimeBenchOptions {
        load_clients: 0,
        ..small()
    };
    let err = run("chain", &model, &opts, &mut |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("at least one client"), "{err}");
}

#[tokio::test]
async fn a_model_that_is_not_onnx_is_a_clear_error() {
    let err = run("junk", b"not a model", &small(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot decode ONNX model"),
        "{err}"
    );
}
