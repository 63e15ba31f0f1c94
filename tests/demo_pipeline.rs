//! The demo's pipeline: real shard servers on loopback chained as a plan says, with a relay
//! tier in the middle, answering like the unsplit model and counting the bytes each link carried.

use std::sync::Arc;

use cnnpc::demo::{Pipeline, TierSpec};
use cnnpc::onnx::frame::Frame;
use cnnpc::onnx::{list_cuts, split};
use cnnpc::planner::accuracy::WireEncoding;
use cnnpc::runtime::server::{ShardModel, Tensor};
use cnnpc::runtime::tract_model::TractShard;
use cnnpc::testkit::models as testmodels;

fn tier(name: &str, model: Option<Arc<dyn ShardModel>>, mbps: Option<f64>) -> TierSpec {
    TierSpec {
        link_mbps: mbps,
        ..TierSpec::new(name, model)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_cloud_plan_relays_through_the_edge_and_answers_like_the_whole_model() {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let shards = split(&model, &[cuts[1].tensor_names()]).unwrap();
    let whole = TractShard::load("whole", &model).unwrap();
    let head: Arc<dyn ShardModel> = Arc::new(TractShard::load("head", &shards[0]).unwrap());
    let tail: Arc<dyn ShardModel> = Arc::new(TractShard::load("tail", &shards[1]).unwrap());
    let shape = whole.input_shape().to_vec();
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();

    let p = Pipeline::start(
        vec![
            tier("end", Some(head.clone()), Some(50.0)),
            tier("edge", None, Some(50.0)),
            tier("cloud", Some(tail), None),
        ],
        "chain",
        "test",
    )
    .await
    .unwrap();
    let requests = 3;
    for _ in 0..requests {
        let a = p.infer(&x, &shape).await.unwrap();
        let want = whole
            .run(Tensor {
                shape: shape.clone(),
                data: x.clone(),
            })
            .unwrap();
        assert_eq!(a.output.len(), want.data.len());
        let diff = a
            .output
            .iter()
            .zip(&want.data)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(
            diff < 1e-5,
            "served answer differs from the model by {diff}"
        );
    }
    // Both links carried the cut tensor's f32 frame, once per request: the relay resends it.
    let cut = head
        .run(Tensor {
            shape: shape.clone(),
            data: x.clone(),
        })
        .unwrap();
    let frame_len = Frame::from_tensor(&cut.data, &cut.shape, 1, WireEncoding::F32, None)
        .unwrap()
        .encoded_len() as f64;
    let bytes = p.link_bytes().await.unwrap();
    assert_eq!(bytes["end->edge"], frame_len * requests as f64, "{bytes:?}");
    assert_eq!(
        bytes["edge->cloud"],
        frame_len * requests as f64,
        "{bytes:?}"
    );
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_input_shape_is_reported_not_hung() {
    let model = testmodels::chain_model_bytes();
    let whole: Arc<dyn ShardModel> = Arc::new(TractShard::load("whole", &model).unwrap());
    let p = Pipeline::start(vec![tier("end", Some(whole), None)], "chain", "t")
        .await
        .unwrap();
    let err = p
        .infer(&[0.0; 4], &[1, 1, 2, 2])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("400") && err.contains("does not match"),
        "{err}"
    );
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_costs_are_timed_after_the_pause_a_served_request_follows() {
    use std::time::{Duration, Instant};
    let (rounds, pause) = (4, Duration::from_millis(30));
    let started = Instant::now();
    let costs = cnnpc::demo::http_costs(rounds, 1000, pause).await.unwrap();
    // Three timed requests per round, each after its pause (the warm-up rounds go unpaused).
    assert!(
        started.elapsed() >= pause * (3 * rounds) as u32,
        "{:?}",
        started.elapsed()
    );
    assert!(costs.entry_ms > 0.0 && costs.hop_ms >= 0.0, "{costs:?}");
}
