//! The calibrated latency model: a profile's measured frame sizes and per-hop costs (codec per
//! element, scaled by the tier that pays it; HTTP per hop and at the entry) priced into every
//! plan, relays that forward a frame as it came paying nothing, and the linear form the search
//! bounds with equal to the breakdown the plan reports.

use cnnpc::planner::accuracy::WireEncoding;
use cnnpc::planner::latency::{Breakdown, LatencyModel, Layout};
use cnnpc::planner::profile::Profile;
use cnnpc::planner::search::Planner;
use cnnpc::planner::topology::{Topology, TopologySpec};

/// Two cuts; the tiers are 18x, 6x and 1x the host; int8 frames are a tenth of f32's.
const PROFILE: &str = "model: m\nwire_encoding: f32\n\
    input: {elements: 1000, bytes: 4000, frame_bytes: {f32: 4037, f16: 1500, int8: 400, int4: 400}}\n\
    cuts:\n\
    \x20 - {name: a, channels: 10, elements: 2000, bytes: 8000, frame_bytes: {f32: 8037, f16: 3000, int8: 1000, int4: 600}}\n\
    \x20 - {name: b, channels: 20, elements: 400, bytes: 1600, frame_bytes: {f32: 1637, f16: 700, int8: 300, int4: 200}}\n\
    devices:\n\
    \x20 host: {tier: host, run_ms: [1, 2, 3]}\n\
    \x20 end: {tier: end, run_ms: [18, 36, 54]}\n\
    \x20 edge: {tier: edge, run_ms: [6, 12, 18]}\n\
    \x20 cloud: {tier: cloud, run_ms: [1, 2, 3]}\n\
    wire:\n\
    \x20 codec: {f32: {encode_ns: 1, decode_ns: 2}, int8: {encode_ns: 10, decode_ns: 4}}\n\
    \x20 hop_ms: 0.5\n\
    \x20 entry_ms: 1.5\n";

fn setup() -> (Profile, Topology) {
    let profile = Profile::parse(PROFILE).unwrap();
    let topology = TopologySpec::end_edge_cloud("end", 20.0, 10.0)
        .build(&profile)
        .unwrap();
    (profile, topology)
}

fn layout<'a>(planner: &'a Planner, topology: &Topology, name: &str, cuts: &[usize]) -> &'a Layout {
    planner
        .layouts
        .iter()
        .find(|l| l.name(topology) == name && l.cuts == cuts)
        .unwrap_or_else(|| panic!("no {name} layout cutting at {cuts:?}"))
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: {a} vs {b}");
}

/// ms on the wire for `bytes` at `mbps`.
fn wire_ms(bytes: f64, mbps: f64) -> f64 {
    bytes * 8.0 / (mbps * 1e6) * 1e3
}

#[test]
fn codec_scales_with_the_tier_and_a_passing_relay_pays_nothing() {
    let (profile, topology) = setup();
    assert_eq!(
        topology
            .tiers
            .iter()
            .map(|t| t.codec_scale)
            .collect::<Vec<_>>(),
        vec![18.0, 6.0, 1.0]
    );
    let planner = Planner::new(&profile, &topology).unwrap();
    let model = LatencyModel {
        profile: &profile,
        topology: &topology,
        encoding: WireEncoding::Int8,
    };
    // end runs segment 0, cut 0 crosses the edge (a relay) to the cloud.
    let l = layout(&planner, &topology, "end-cloud", &[0]);
    let k = 4u32;
    let b: Breakdown = model.breakdown(l, &[k]);
    let per_channel = 1000.0 / 10.0;
    let elements = 2000.0 / 10.0 * f64::from(k);
    close(b.bytes[0], per_channel * f64::from(k), "end->edge bytes");
    close(b.bytes[1], per_channel * f64::from(k), "edge->cloud bytes");
    // The end reads the client's f32 input and frames the cut in int8, at 18x.
    close(
        b.codec_ms[0],
        (2.0 * 1000.0 + 10.0 * elements) * 18.0 / 1e6,
        "end codec",
    );
    close(b.codec_ms[1], 0.0, "the edge forwards the frame as it came");
    close(
        b.codec_ms[2],
        4.0 * elements / 1e6,
        "cloud reads the int8 frame",
    );
    close(b.transfer_ms[0], wire_ms(400.0, 20.0) + 0.5, "end->edge");
    close(b.transfer_ms[1], wire_ms(400.0, 10.0) + 0.5, "edge->cloud");
    close(
        b.overhead_ms,
        1.5 + 1000.0 / 1e6,
        "entry and the client's framing",
    );
    close(b.compute_ms[0], 18.0, "end compute");
    close(b.compute_ms[2], 5.0, "cloud compute");
    let sum: f64 = b
        .compute_ms
        .iter()
        .chain(&b.codec_ms)
        .chain(&b.transfer_ms)
        .sum();
    close(b.total_ms, sum + b.overhead_ms, "total");
}

#[test]
fn a_first_tier_relay_frames_the_input_in_the_plans_encoding_unless_it_is_f32() {
    let (profile, topology) = setup();
    let planner = Planner::new(&profile, &topology).unwrap();
    let l = layout(&planner, &topology, "cloud-only", &[]);
    let at = |encoding| {
        LatencyModel {
            profile: &profile,
            topology: &topology,
            encoding,
        }
        .breakdown(l, &[])
    };
    // int8: the end reads the f32 input and frames it in int8 (at 18x); the cloud reads int8.
    let b = at(WireEncoding::Int8);
    close(b.codec_ms[0], (2.0 + 10.0) * 1000.0 * 18.0 / 1e6, "end");
    close(b.codec_ms[1], 0.0, "edge");
    close(b.codec_ms[2], 4.0 * 1000.0 / 1e6, "cloud");
    close(b.bytes[0], 400.0, "the input's int8 frame");
    // f32: the end forwards the client's frame untouched; only the cloud reads it.
    let b = at(WireEncoding::F32);
    close(b.codec_ms[0], 0.0, "end forwards");
    close(b.codec_ms[2], 2.0 * 1000.0 / 1e6, "cloud");
    close(b.bytes[1], 4037.0, "the input's f32 frame");
}

#[test]
fn the_linear_form_equals_the_breakdown_everywhere() {
    let (profile, topology) = setup();
    let planner = Planner::new(&profile, &topology).unwrap();
    for encoding in [WireEncoding::F32, WireEncoding::Int8, WireEncoding::Int4] {
        let model = LatencyModel {
            profile: &profile,
            topology: &topology,
            encoding,
        };
        for l in &planner.layouts {
            let lin = model.linear(l);
            let channels: Vec<u32> = l.cuts.iter().map(|&c| profile.cuts[c].channels).collect();
            for kept in [
                channels.clone(),
                channels.iter().map(|c| c / 2).collect(),
                vec![1; channels.len()],
            ] {
                let b = model.breakdown(l, &kept);
                close(
                    lin.at(&kept),
                    b.total_ms,
                    &format!("{:?} {kept:?} {encoding}", l.deployment),
                );
            }
        }
    }
}

#[test]
fn without_wire_costs_the_reference_overheads_apply() {
    let text = PROFILE.split("wire:").next().unwrap();
    let profile = Profile::parse(text).unwrap();
    let topology = TopologySpec::end_edge_cloud("end", 20.0, 10.0)
        .build(&profile)
        .unwrap();
    let planner = Planner::new(&profile, &topology).unwrap();
    let model = LatencyModel {
        profile: &profile,
        topology: &topology,
        encoding: WireEncoding::Int8,
    };
    let end_only = model.breakdown(layout(&planner, &topology, "end-only", &[]), &[]);
    close(end_only.overhead_ms, 0.53 + 1.127, "local");
    let split = model.breakdown(layout(&planner, &topology, "end-cloud", &[0]), &[4]);
    close(split.overhead_ms, 0.53 + 1.13, "remote");
    assert!(split.codec_ms.iter().all(|ms| *ms == 0.0));
    // Measured frame sizes still count where the profile has them.
    close(split.bytes[0], 400.0, "bytes");
}

/// The operator corrects compute and codec apart: a tier's slowdown (its compute factor)
/// scales its codec too, and a codec factor scales only the codec, on top of it.
#[test]
fn a_codec_factor_scales_the_codec_on_top_of_the_compute_factor_and_nothing_else() {
    let profile = Profile::parse(PROFILE).unwrap();
    let mut spec = TopologySpec::end_edge_cloud("end", 20.0, 10.0);
    spec.tiers[0].2 = 1.5;
    let base = spec.build(&profile).unwrap();
    spec.codec_scale.insert("end".into(), 2.0);
    let corrected = spec.build(&profile).unwrap();
    close(
        base.tiers[0].codec_scale,
        18.0 * 1.5,
        "the compute factor slows the codec",
    );
    close(
        corrected.tiers[0].codec_scale,
        18.0 * 1.5 * 2.0,
        "and the codec factor on top",
    );
    assert_eq!(
        corrected.tiers[0].run_ms, base.tiers[0].run_ms,
        "compute untouched"
    );
    assert_eq!(
        corrected.tiers[1..],
        base.tiers[1..],
        "other tiers untouched"
    );
    let planner = Planner::new(&profile, &base).unwrap();
    let l = layout(&planner, &base, "end-cloud", &[0]);
    let at = |topology: &Topology| {
        LatencyModel {
            profile: &profile,
            topology,
            encoding: WireEncoding::Int8,
        }
        .breakdown(l, &[4])
    };
    let (b, c) = (at(&base), at(&corrected));
    close(c.codec_ms[0], 2.0 * b.codec_ms[0], "end codec doubles");
    close(c.compute_ms[0], b.compute_ms[0], "end compute stays");
    close(c.codec_ms[2], b.codec_ms[2], "cloud codec stays");
    spec.codec_scale.insert("end".into(), 0.0);
    assert!(spec.build(&profile).is_err(), "a codec factor must be > 0");
}

#[test]
fn a_tier_pays_its_wake_once_per_request_at_its_own_speed_and_a_passing_relay_pays_none() {
    let woken = format!("{PROFILE}\x20 wake: {{compute_ms: 0.2, codec_ms: 0.1}}\n");
    let profile = Profile::parse(&woken).unwrap();
    let (plain, topology) = setup();
    let planner = Planner::new(&profile, &topology).unwrap();
    let at = |p: &Profile, name: &str, cuts: &[usize], kept: &[u32], encoding| {
        let l = layout(&planner, &topology, name, cuts);
        LatencyModel {
            profile: p,
            topology: &topology,
            encoding,
        }
        .breakdown(l, kept)
    };
    // end → (edge relays) → cloud: the end and the cloud start after idling, the edge forwards
    // the frame as it came and pays nothing.
    let (w, p) = (
        at(&profile, "end-cloud", &[0], &[4], WireEncoding::Int8),
        at(&plain, "end-cloud", &[0], &[4], WireEncoding::Int8),
    );
    close(
        w.compute_ms[0] - p.compute_ms[0],
        0.2 * 18.0,
        "end compute wake",
    );
    close(w.codec_ms[0] - p.codec_ms[0], 0.1 * 18.0, "end codec wake");
    close(
        w.compute_ms[1] - p.compute_ms[1],
        0.0,
        "the relay computes nothing",
    );
    close(
        w.codec_ms[1] - p.codec_ms[1],
        0.0,
        "the relay frames nothing",
    );
    close(w.compute_ms[2] - p.compute_ms[2], 0.2, "cloud compute wake");
    close(w.codec_ms[2] - p.codec_ms[2], 0.1, "cloud codec wake");
    close(
        w.total_ms - p.total_ms,
        0.3 * 19.0,
        "two starts in the total",
    );
    // A first-tier relay that frames the input in int8 wakes for its codec, not its compute.
    let (w, p) = (
        at(&profile, "cloud-only", &[], &[], WireEncoding::Int8),
        at(&plain, "cloud-only", &[], &[], WireEncoding::Int8),
    );
    close(
        w.codec_ms[0] - p.codec_ms[0],
        0.1 * 18.0,
        "end frames the input",
    );
    close(
        w.compute_ms[0] - p.compute_ms[0],
        0.0,
        "end computes nothing",
    );
    // The search's linear form carries the wake too.
    let l = layout(&planner, &topology, "end-cloud", &[0]);
    let model = LatencyModel {
        profile: &profile,
        topology: &topology,
        encoding: WireEncoding::Int8,
    };
    close(
        model.linear(l).at(&[4]),
        model.breakdown(l, &[4]).total_ms,
        "linear = breakdown",
    );
}

#[test]
fn only_a_tier_that_sends_a_compressed_frame_pays_the_compressed_wake() {
    let woken =
        format!("{PROFILE}\x20 wake: {{compute_ms: 0.0, codec_ms: 0.1, compressed_ms: 0.3}}\n");
    let profile = Profile::parse(&woken).unwrap();
    let (plain, topology) = setup();
    let planner = Planner::new(&profile, &topology).unwrap();
    let extra = |name: &str, cuts: &[usize], kept: &[u32], encoding| -> Vec<f64> {
        let l = layout(&planner, &topology, name, cuts);
        let at = |p: &Profile| {
            LatencyModel {
                profile: p,
                topology: &topology,
                encoding,
            }
            .breakdown(l, kept)
        };
        let (w, p) = (at(&profile), at(&plain));
        w.codec_ms
            .iter()
            .zip(&p.codec_ms)
            .map(|(a, b)| a - b)
            .collect()
    };
    // The end frames int8 (both wakes at 18x); the edge relays it as it came; the cloud only
    // reads and frames its f32 answer.
    let e = extra("end-cloud", &[0], &[4], WireEncoding::Int8);
    close(e[0], 0.4 * 18.0, "end sends int8");
    close(e[1], 0.0, "the edge passes the frame through");
    close(e[2], 0.1, "the cloud sends nothing compressed");
    // An uncompressed split: f32 out of the end, so only the f32 wake.
    let e = extra("end-cloud", &[0], &[10], WireEncoding::F32);
    close(e[0], 0.1 * 18.0, "end sends f32");
    close(e[2], 0.1, "cloud");
    // A cloud-only int4 plan sends its input in int8: the end compresses it.
    let e = extra("cloud-only", &[], &[], WireEncoding::Int4);
    close(e[0], 0.4 * 18.0, "end compresses the input");
    // A profile without the field (written before it) reads as 0: codec_ms is the whole cost.
    assert_eq!(plain.wire.as_ref().unwrap().wake.compressed_ms, 0.0);
    let old = format!("{PROFILE}\x20 wake: {{compute_ms: 0.0, codec_ms: 0.1}}\n");
    assert_eq!(
        Profile::parse(&old)
            .unwrap()
            .wire
            .unwrap()
            .wake
            .compressed_ms,
        0.0
    );
    let bad = format!("{PROFILE}\x20 wake: {{compute_ms: 0, codec_ms: 0, compressed_ms: -1}}\n");
    let e = Profile::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("wake compressed_ms"), "{e}");
}

#[test]
fn a_negative_wake_is_refused() {
    let bad = format!("{PROFILE}\x20 wake: {{compute_ms: -1, codec_ms: 0}}\n");
    let e = Profile::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("wake compute_ms"), "{e}");
}

#[test]
fn a_crossings_own_codec_cost_is_priced_where_it_crosses_and_the_average_elsewhere() {
    use cnnpc::planner::profile::CodecCost;
    let (mut profile, topology) = setup();
    let cost = |encode_ns, decode_ns| CodecCost {
        encode_ns,
        decode_ns,
    };
    // Cut 0 frames at 3 ns and reads at 1 ns per value in int8 (the average says 10 and 4);
    // the input reads at 0.5 ns in f32 (the average says 2) and the client frames it at 0.25.
    profile.cuts[0]
        .codec
        .insert(WireEncoding::Int8, cost(3.0, 1.0));
    profile
        .input
        .codec
        .insert(WireEncoding::F32, cost(0.25, 0.5));
    let planner = Planner::new(&profile, &topology).unwrap();
    let model = LatencyModel {
        profile: &profile,
        topology: &topology,
        encoding: WireEncoding::Int8,
    };
    let k = 4u32;
    let elements = 2000.0 / 10.0 * f64::from(k);
    let l = layout(&planner, &topology, "end-cloud", &[0]);
    let b = model.breakdown(l, &[k]);
    close(
        b.codec_ms[0],
        (0.5 * 1000.0 + 3.0 * elements) * 18.0 / 1e6,
        "end: the input's own read, the cut's own framing",
    );
    close(
        b.codec_ms[2],
        1.0 * elements / 1e6,
        "cloud: the cut's own read",
    );
    close(
        b.overhead_ms,
        1.5 + 0.25 * 1000.0 / 1e6,
        "the client frames the input",
    );
    // Cut 1 has no cost of its own: the average over every crossing prices it.
    let l = layout(&planner, &topology, "end-cloud", &[1]);
    let b = model.breakdown(l, &[5]);
    let elements = 400.0 / 20.0 * 5.0;
    close(
        b.codec_ms[2],
        4.0 * elements / 1e6,
        "cloud: the average read",
    );
    close(
        model.linear(l).at(&[5]),
        b.total_ms,
        "the search's linear form agrees",
    );
}

#[test]
fn a_crossings_negative_codec_cost_is_refused_and_named() {
    let bad = PROFILE.replace(
        "frame_bytes: {f32: 1637, f16: 700, int8: 300, int4: 200}}",
        "frame_bytes: {f32: 1637, f16: 700, int8: 300, int4: 200}, codec: {int8: {encode_ns: -1, decode_ns: 1}}}",
    );
    assert_ne!(bad, PROFILE, "the test edits cut 1");
    let e = Profile::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("cuts[1].codec.int8"), "{e}");
}
