//! `cnnpc profile` on a generated model: a profile the planner accepts, with exact cut sizes and
//! the documented tier slowdowns; then planned.

use cnnpc::onnx::list_cuts;
use cnnpc::onnx::profile::{profile_model, ProfileOptions, MAX_ROUNDS};
use cnnpc::planner::profile::Profile;
use cnnpc::planner::search::{Planner, SearchConfig, Strategy};
use cnnpc::planner::topology::TopologySpec;
use cnnpc::testkit::models as testmodels;

#[test]
fn profiles_every_single_tensor_cut_and_plans() {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let mut seen = Vec::new();
    let p = profile_model(
        &model,
        "chain",
        &ProfileOptions::default(),
        &mut |done, total| seen.push((done, total)),
    )
    .unwrap();
    assert_eq!(p.cuts.len(), cuts.len());
    // One warm-up run per segment and per sliced segment (relu1 and relu2 end in a Conv
    // chain), then `repeats` timed rounds over all of them, then the wire costs.
    let graph = cnnpc::onnx::Graph::from_bytes(&model).unwrap();
    let sliced = (0..cuts.len())
        .filter(|&k| {
            cnnpc::onnx::profile::sliced_segment(&graph, &cuts, k)
                .unwrap()
                .is_some()
        })
        .count();
    assert_eq!(sliced, 2);
    let steps = (cuts.len() + 1 + sliced) * (ProfileOptions::default().repeats + 1) + 1;
    assert_eq!(
        seen.last(),
        Some(&(steps, steps)),
        "progress reaches the end"
    );
    assert!(
        seen.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "one step at a time"
    );
    for (c, cut) in p.cuts.iter().zip(&cuts) {
        assert_eq!(u64::from(c.channels), cut.channels);
        assert_eq!(c.bytes, c.elements as f64 * 4.0);
        assert_eq!(c.tensors[0].name, cut.tensors[0].name);
    }
    let host = &p.devices["host"].run_ms;
    assert_eq!(host.len(), p.segments());
    assert!(host.iter().all(|ms| *ms > 0.0));
    for (dev, f) in [("end", 18.0), ("edge", 6.0), ("cloud", 1.0)] {
        let d = &p.devices[dev];
        assert_eq!(d.tier, dev);
        for (a, b) in d.run_ms.iter().zip(host) {
            assert!((a - b * f).abs() < 1e-12);
        }
    }
    // The written YAML parses back to the same profile, and the planner accepts it.
    let back = Profile::parse(&serde_yaml::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    let topo = TopologySpec::end_edge_cloud("end", 20.0, 10.0)
        .build(&p)
        .unwrap();
    let planner = Planner::new(&p, &topo).unwrap();
    let plan = planner
        .search(
            Strategy::Neurosurgeon,
            None,
            &SearchConfig::new(vec![p.wire_encoding], false),
            None,
        )
        .unwrap();
    assert!(plan.latency_ms > 0.0);
}

#[test]
fn chosen_cuts_must_exist_and_be_ordered() {
    let model = testmodels::chain_model_bytes();
    let opts = |cuts| ProfileOptions {
        cuts: Some(cuts),
        repeats: 1,
        ..ProfileOptions::default()
    };
    let err = profile_model(&model, "m", &opts(vec![99]), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("no cut 99"), "{err}");
    let err = profile_model(&model, "m", &opts(vec![1, 0]), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("increasing order"), "{err}");
    let p = profile_model(&model, "m", &opts(vec![1]), &mut |_, _| {}).unwrap();
    assert_eq!(p.cuts.len(), 1);
    assert!(profile_model(b"garbage", "m", &ProfileOptions::default(), &mut |_, _| {}).is_err());
}

#[test]
fn the_profile_measures_what_crosses_the_wire_and_what_framing_costs() {
    use cnnpc::onnx::profile::HttpCosts;
    use cnnpc::planner::accuracy::WireEncoding;
    let model = testmodels::chain_model_bytes();
    let http = HttpCosts {
        hop_ms: 0.3,
        entry_ms: 1.2,
    };
    let opts = ProfileOptions {
        repeats: 2,
        http: Some(http),
        ..ProfileOptions::default()
    };
    let p = profile_model(&model, "chain", &opts, &mut |_, _| {}).unwrap();
    let wire = p.wire.as_ref().expect("a measured profile has wire costs");
    assert_eq!((wire.hop_ms, wire.entry_ms), (0.3, 1.2));
    for enc in WireEncoding::ALL {
        let c = wire.codec[&enc];
        assert!(c.encode_ns > 0.0 && c.decode_ns > 0.0, "{enc}: {c:?}");
    }
    // And every crossing's own, in every encoding.
    let own = std::iter::once(&p.input.codec).chain(p.cuts.iter().map(|c| &c.codec));
    for (k, codec) in own.enumerate() {
        assert_eq!(
            codec.len(),
            WireEncoding::ALL.len(),
            "crossing {k}: {codec:?}"
        );
        for (enc, c) in codec {
            assert!(
                c.encode_ns > 0.0 && c.decode_ns > 0.0,
                "crossing {k} {enc}: {c:?}"
            );
        }
    }
    // f32 is never compressed: the frame is the header (21 bytes + 4 per dim) and 4 bytes per
    // value. The others ship a scale and offset per channel (quantised) and go through zstd.
    // Where a channel holds more than a few values, that is fewer bytes than f32.
    let crossings = std::iter::once((&p.input.frame_bytes, p.input.elements, 3u64)).chain(
        p.cuts
            .iter()
            .map(|c| (&c.frame_bytes, c.elements, u64::from(c.channels))),
    );
    for (bytes, elements, channels) in crossings {
        assert_eq!(bytes.len(), 4, "{bytes:?}");
        let f32_frame = 21.0 + 4.0 * 4.0 + 4.0 * elements as f64;
        assert_eq!(bytes[&WireEncoding::F32], f32_frame);
        if elements / channels >= 64 {
            for enc in [WireEncoding::F16, WireEncoding::Int8, WireEncoding::Int4] {
                assert!(bytes[&enc] < f32_frame, "{enc}: {bytes:?}");
            }
        }
    }
    // On a real input the frames are what that data compresses to: a constant input frames
    // to far fewer bytes than the pseudo-random one.
    let flat = ProfileOptions {
        samples: vec![vec![0.25; p.input.elements as usize]],
        ..opts.clone()
    };
    let q = profile_model(&model, "chain", &flat, &mut |_, _| {}).unwrap();
    let int8 = |p: &Profile| p.input.frame_bytes[&WireEncoding::Int8];
    assert!(int8(&q) * 4.0 < int8(&p), "{} vs {}", int8(&q), int8(&p));
    let wrong = ProfileOptions {
        samples: vec![vec![0.0; 3]],
        ..opts
    };
    let err = profile_model(&model, "chain", &wrong, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("3 values"), "{err}");
}

#[test]
fn a_window_takes_rounds_until_it_has_passed() {
    let model = testmodels::chain_model_bytes();
    let mut seen = Vec::new();
    let opts = ProfileOptions {
        repeats: 2,
        window_seconds: 0.3,
        // Back to back: the window then holds many rounds.
        round_idle: std::time::Duration::ZERO,
        ..ProfileOptions::default()
    };
    let started = std::time::Instant::now();
    let p = profile_model(&model, "chain", &opts, &mut |done, total| {
        seen.push((done, total))
    })
    .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let (done, total) = *seen.last().unwrap();
    assert_eq!(done, total, "progress reaches its (revised) total");
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    assert!(p.notes.contains("median of"), "{}", p.notes);
    let rounds: usize = p
        .notes
        .split("median of ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // A round of this model takes well under a millisecond: far more than 2 fit, up to the
    // cap; short of the cap, the rounds spanned about the window.
    assert!(rounds > 2 && rounds <= MAX_ROUNDS, "{rounds} rounds");
    assert!(
        rounds == MAX_ROUNDS || elapsed >= 0.25,
        "{rounds} rounds in {elapsed} s"
    );
    let bad = ProfileOptions {
        window_seconds: f64::NAN,
        ..ProfileOptions::default()
    };
    let err = profile_model(&model, "chain", &bad, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
}

#[test]
fn rounds_are_timed_after_an_idle_pause_which_then_prices_no_compute_wake() {
    use std::time::{Duration, Instant};
    let model = testmodels::chain_model_bytes();
    let opts = |idle| ProfileOptions {
        repeats: 4,
        round_idle: idle,
        ..ProfileOptions::default()
    };
    let t = Instant::now();
    let idled = profile_model(
        &model,
        "chain",
        &opts(Duration::from_millis(60)),
        &mut |_, _| {},
    )
    .unwrap();
    let with = t.elapsed();
    // Four rounds, each after 60 ms asleep, and the wake's 24 cold starts after the same pause
    // (as served, a tier starts after waiting as long as the rounds do).
    assert!(with.as_secs_f64() >= 4.0 * 0.060 + 24.0 * 0.060, "{with:?}");
    assert!(
        idled.notes.contains("each after a 60 ms idle pause"),
        "{}",
        idled.notes
    );
    let w = idled.wire.as_ref().unwrap().wake;
    // The rounds carry the slower start; the wake still prices the frames.
    assert_eq!(w.compute_ms, 0.0, "{w:?}");
    assert!(w.codec_ms.is_finite() && w.codec_ms >= 0.0, "{w:?}");
    let tight = profile_model(&model, "chain", &opts(Duration::ZERO), &mut |_, _| {}).unwrap();
    assert!(tight.notes.contains("back to back"), "{}", tight.notes);
}

#[test]
fn the_wake_is_timed_after_real_idle_pauses_and_can_be_left_out() {
    use std::time::Instant;
    let model = testmodels::chain_model_bytes();
    let opts = |wake| ProfileOptions {
        repeats: 1,
        wake,
        ..ProfileOptions::default()
    };
    let t = Instant::now();
    let woken = profile_model(&model, "chain", &opts(true), &mut |_, _| {}).unwrap();
    let with = t.elapsed();
    let w = woken.wire.as_ref().unwrap().wake;
    assert!(
        w.compute_ms.is_finite()
            && w.compute_ms >= 0.0
            && w.codec_ms.is_finite()
            && w.codec_ms >= 0.0
            && w.compressed_ms.is_finite()
            && w.compressed_ms >= 0.0,
        "{w:?}"
    );
    // Twelve rounds per output encoding (f32, int8), each after the rounds' pause: a sleep is
    // never shorter than asked.
    let pause = cnnpc::onnx::profile::ROUND_IDLE.as_secs_f64();
    assert!(with.as_secs_f64() >= 24.0 * pause, "{with:?}");
    let plain = profile_model(&model, "chain", &opts(false), &mut |_, _| {}).unwrap();
    assert!(plain.wire.as_ref().unwrap().wake.is_zero());
    // And a profile without it says nothing about it.
    assert!(!serde_yaml::to_string(&plain).unwrap().contains("wake"));
}

#[test]
fn frame_bytes_are_the_mean_over_every_sample_and_a_bad_one_is_named() {
    use cnnpc::onnx::Graph;
    use cnnpc::planner::accuracy::WireEncoding;
    let model = testmodels::chain_model_bytes();
    let n = Graph::from_bytes(&model)
        .map(|g| {
            let info = g.require_info(&g.inputs()[0]).unwrap();
            cnnpc::onnx::profile::fixed_shape(&info.dims)
                .iter()
                .product::<usize>()
        })
        .unwrap();
    let opts = |samples: Vec<Vec<f32>>| ProfileOptions {
        repeats: 1,
        wake: false,
        samples,
        ..ProfileOptions::default()
    };
    // A flat input compresses to little, a varied one to much more.
    let flat = vec![0.25f32; n];
    let varied: Vec<f32> = (0..n).map(|i| ((i * 7919) % 251) as f32 / 251.0).collect();
    let run = |s: Vec<Vec<f32>>| profile_model(&model, "chain", &opts(s), &mut |_, _| {}).unwrap();
    let (a, b, both) = (
        run(vec![flat.clone()]),
        run(vec![varied.clone()]),
        run(vec![flat.clone(), varied]),
    );
    let sizes = |p: &Profile| -> Vec<std::collections::BTreeMap<WireEncoding, f64>> {
        std::iter::once(p.input.frame_bytes.clone())
            .chain(p.cuts.iter().map(|c| c.frame_bytes.clone()))
            .collect()
    };
    let mut differ = 0;
    for ((x, y), m) in sizes(&a).iter().zip(sizes(&b)).zip(sizes(&both)) {
        for (enc, bytes) in &m {
            assert_eq!(*bytes, (x[enc] + y[enc]) / 2.0, "{enc}: {x:?} {y:?} {m:?}");
            differ += usize::from(x[enc] != y[enc]);
        }
    }
    // The inputs did frame differently, so the mean is not either one.
    assert!(differ > 0);
    assert!(
        both.notes.contains("2 calibration inputs"),
        "{}",
        both.notes
    );
    let err = profile_model(
        &model,
        "chain",
        &opts(vec![flat, vec![0.0; 3]]),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("3 values"), "{err}");
}
