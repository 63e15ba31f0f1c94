//! A fake API server for controller tests (the `tower_test::mock::pair` approach of
//! kube-rs/controller-rs, with a small in-memory object store instead of a fixed script, so a
//! scenario states what is in the cluster and asserts on what the controller wrote).
//!
//! It understands what the controller does: list by equality label selector, get, server-side
//! apply (PATCH, stored as sent; `/status` merges the status in), delete, and event create/patch.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tower_test::mock;

/// One request the controller sent.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Call {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

#[derive(Clone, Default)]
pub struct FakeApi {
    /// Item path (`/apis/apps/v1/namespaces/ns/deployments/x`) → object.
    pub objects: Arc<Mutex<BTreeMap<String, Value>>>,
    pub calls: Arc<Mutex<Vec<Call>>>,
}

const COLLECTIONS: [&str; 7] = [
    "leases",
    "horizontalpodautoscalers",
    "configmaps",
    "deployments",
    "services",
    "events",
    "collaborativeinferences",
];

fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
        let Some((k, v)) = kv.split_once('=') else {
            return false;
        };
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            // Enough percent-decoding for label selectors.
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
                .replace('+', " ")
        })
    })
}

fn respond(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn not_found(path: &str) -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
    )
}

impl FakeApi {
    /// A client whose requests this fake serves, and the task serving them.
    pub fn start(&self) -> (kube::Client, tokio::task::JoinHandle<()>) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let me = self.clone();
        let task = tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let resp = me.serve(req).await;
                send.send_response(resp);
            }
        });
        (kube::Client::new(service, "default"), task)
    }

    pub fn put(&self, path: &str, obj: Value) {
        self.objects.lock().unwrap().insert(path.into(), obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    pub fn writes(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.is_write())
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// Paths of stored objects under a collection path.
    pub fn names(&self, collection: &str) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{collection}/")))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let bytes: Bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        self.calls.lock().unwrap().push(Call {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        let last = path.rsplit('/').next().unwrap_or("");
        let is_collection = COLLECTIONS.contains(&last);
        let mut objects = self.objects.lock().unwrap();
        match method {
            Method::GET if is_collection => {
                let sel = query_param(&query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, _)| {
                        k.strip_prefix(&format!("{path}/"))
                            .is_some_and(|rest| !rest.contains('/'))
                    })
                    .map(|(_, v)| v.clone())
                    .filter(|v| matches_selector(v, &sel))
                    .collect();
                respond(
                    StatusCode::OK,
                    &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            Method::GET => match objects.get(&path) {
                Some(v) => respond(StatusCode::OK, v),
                None => not_found(&path),
            },
            Method::PATCH if path.ends_with("/status") => {
                let item = path.trim_end_matches("/status").to_string();
                match objects.get_mut(&item) {
                    Some(obj) => {
                        if let Some(s) = body.as_ref().and_then(|b| b.get("status")) {
                            obj["status"] = s.clone();
                        }
                        respond(StatusCode::OK, obj)
                    }
                    None => not_found(&item),
                }
            }
            Method::PATCH => {
                let mut obj = body.unwrap_or(Value::Null);
                if path.contains("/events/") {
                    return respond(StatusCode::OK, &obj);
                }
                // Server-side apply, simplified: the applied object replaces the stored one,
                // keeping its status (set by "the cluster", e.g. a Deployment's ready replicas).
                if let Some(old) = objects.get(&path) {
                    if !old["status"].is_null() {
                        obj["status"] = old["status"].clone();
                    }
                }
                obj["metadata"]["uid"] = json!(format!("uid-{}", path.len()));
                objects.insert(path, obj.clone());
                respond(StatusCode::OK, &obj)
            }
            Method::PUT => {
                // Replace: optimistic concurrency on metadata.resourceVersion.
                let mut obj = body.unwrap_or(Value::Null);
                let Some(old) = objects.get(&path) else {
                    return not_found(&path);
                };
                if obj["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                    return respond(
                        StatusCode::CONFLICT,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "the object has been modified", "reason": "Conflict", "code": 409}),
                    );
                }
                let rv: u64 = old["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                obj["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                objects.insert(path, obj.clone());
                respond(StatusCode::OK, &obj)
            }
            Method::POST => {
                let mut obj = body.unwrap_or(Value::Null);
                let name = obj["metadata"]["name"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!(
                            "{}{}",
                            obj["metadata"]["generateName"].as_str().unwrap_or("ev-"),
                            objects.len()
                        )
                    });
                obj["metadata"]["name"] = json!(name);
                let item = format!("{path}/{name}");
                if objects.contains_key(&item) {
                    return respond(
                        StatusCode::CONFLICT,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "already exists", "reason": "AlreadyExists", "code": 409}),
                    );
                }
                obj["metadata"]["resourceVersion"] = json!("1");
                objects.insert(item, obj.clone());
                respond(StatusCode::CREATED, &obj)
            }
            Method::DELETE => match objects.remove(&path) {
                Some(_) => respond(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ),
                None => not_found(&path),
            },
            _ => not_found(&path),
        }
    }
}
