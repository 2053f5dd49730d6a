//! The OpenAPI document against the router, the source and real responses.
//!
//! axum's `Router` cannot list its routes, so coverage is checked from both
//! ends:
//! - every path the source registers by hand (`.route("…")`, `.nest(…)` …:
//!   anything `routes!` does not put in the document) must be documented or
//!   listed in [`not_in_spec`]; a registration whose path is not a literal
//!   fails the test, since it cannot be checked;
//! - every documented path is probed with every method through the real
//!   router: the methods it answers (anything but the router's own 404 and
//!   405) must be exactly the documented ones. A method added by hand to a
//!   documented path, or a documented operation that is not routed, fails.
//!
//! Routes registered with `routes!` need neither: their method and path come
//! from the same annotation as their document entry.
//!
//! The contract test then drives every documented operation and checks each
//! response (status, content type, headers, body) against the document, so
//! the schema-only mirrors of the domain's types cannot drift unnoticed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use super::*;
use crate::{
    error::PROBLEM_JSON,
    openapi::{DOCS_PATH, SPEC_PATH},
};

/// Routes deliberately left out of the document: the document itself and
/// the page that renders it (utoipa-swagger-ui registers these four).
/// Routes that are not API operations (the document itself, its page and
/// the console's HTML pages and forms), each with a method it answers.
fn not_in_spec() -> Vec<(String, Method)> {
    let mut routes = vec![
        (SPEC_PATH.to_owned(), Method::GET),
        (DOCS_PATH.to_owned(), Method::GET),
        (format!("{DOCS_PATH}/"), Method::GET),
        (format!("{DOCS_PATH}/{{*rest}}"), Method::GET),
    ];
    for (path, method) in [
        ("/", Method::GET),
        ("/login", Method::GET),
        ("/login/link/{token}", Method::GET),
        ("/login/link", Method::POST),
        ("/logout", Method::POST),
        ("/logout/everywhere", Method::POST),
        ("/inbox/state", Method::GET),
        ("/approvals/{id}/{action}", Method::POST),
        ("/admin/keys", Method::GET),
        ("/admin/keys", Method::POST),
        ("/admin/keys/{id}/revoke", Method::POST),
        ("/admin/users", Method::GET),
        ("/admin/users", Method::POST),
        ("/admin/users/{id}", Method::POST),
        ("/admin/users/{id}/link", Method::POST),
        ("/imports", Method::GET),
        ("/imports", Method::POST),
        ("/imports/{id}", Method::GET),
        ("/imports/{id}/rejected.csv", Method::GET),
        ("/leads", Method::GET),
        ("/leads/{id}", Method::GET),
        ("/static/console.css", Method::GET),
        ("/static/console.js", Method::GET),
    ] {
        routes.push((path.to_owned(), method));
    }
    routes
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn document() -> Value {
    serde_json::to_value(crate::openapi_document()).unwrap()
}

/// `(path template, lower-case method)` of every documented operation.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.iter().any(|m| m.as_str().eq_ignore_ascii_case(k)))
                .map(|m| (path.clone(), m.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Follows a local `$ref` (`#/components/…`).
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').unwrap_or(r);
            spec.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {r}"))
        }
        None => value,
    }
}

/// Every path the source registers by hand, with where; `Err` for a
/// registration whose path is not a string literal. Code after a
/// `#[cfg(test)] mod tests` is not scanned.
fn scan_routes(file: &str, source: &str) -> Vec<Result<String, String>> {
    let source = source
        .find("#[cfg(test)]\nmod tests")
        .map_or(source, |end| &source[..end]);
    let mut found = Vec::new();
    for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
        for (at, _) in source.match_indices(call) {
            let line = source[..at].lines().count();
            let rest = source[at + call.len()..].trim_start();
            match rest.strip_prefix('"').and_then(|lit| lit.split_once('"')) {
                Some((path, _)) => found.push(Ok(path.to_owned())),
                None => found.push(Err(format!(
                    "{file}:{line}: `{call}` with a path that is not a literal"
                ))),
            }
        }
    }
    found
}

fn scan_dir(dir: &Path, found: &mut Vec<Result<String, String>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            // The test modules (`tests.rs` and `tests/`) register nothing.
            if name != "tests" {
                scan_dir(&path, found);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            let source = std::fs::read_to_string(&path).unwrap();
            found.extend(scan_routes(&path.display().to_string(), &source));
        }
    }
}

/// A concrete URI for a template: ids are a nil UUID (routing does not look
/// at them), the docs' wildcard one of its files.
fn concrete(template: &str) -> String {
    template
        .replace("{*rest}", "index.css")
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                uuid::Uuid::nil().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the router has a route for `method` on `uri`: anything but its
/// fallback's 404 ("route not found") or a 405. No credentials are sent, so
/// handlers stop at authentication and nothing is written.
async fn routed(app: &Router, method: &Method, uri: &str) -> bool {
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let fallback = status == StatusCode::NOT_FOUND && body["detail"] == "route not found";
    !fallback && status != StatusCode::METHOD_NOT_ALLOWED
}

/// What each route says of `Idempotency-Key` is what the layer does with it.
#[test]
fn the_idempotency_key_is_documented_as_each_route_handles_it() {
    let spec = document();
    let said = |path: &str| -> (String, bool) {
        let op = &spec["paths"][path]["post"];
        let description = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&spec, p))
            .find(|p| p["name"] == "Idempotency-Key")
            .and_then(|p| p["description"].as_str())
            .unwrap_or_else(|| panic!("{path}: no Idempotency-Key"))
            .to_owned();
        let replays = resolve(&spec, &op["responses"]["200"])["headers"]
            .get("Idempotent-Replayed")
            .or_else(|| {
                resolve(&spec, &op["responses"]["201"])["headers"].get("Idempotent-Replayed")
            })
            .is_some();
        (description, replays)
    };
    let (stored, replays) = said("/v1/leads");
    assert!(stored.contains("response is kept") && replays, "{stored}");
    for path in ["/v1/privacy/export", "/v1/privacy/erase"] {
        let (text, replays) = said(path);
        assert!(text.contains("never stored") && !replays, "{path}: {text}");
    }
    let (refused, replays) = said("/v1/webhooks");
    assert!(refused.starts_with("Refused") && !replays, "{refused}");
}

#[test]
fn the_route_scanner_finds_hand_registered_routes() {
    let source = "Router::new()\n    .route(\n        \"/v1/secret\", get(x))\n    .nest(PREFIX, r)\n    .routes(routes!(y))\n#[cfg(test)]\nmod tests { .route(\"/ignored\", get(z)) }";
    let found = scan_routes("x.rs", source);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0], Ok("/v1/secret".to_owned()));
    assert!(found[1].as_ref().is_err_and(|e| e.starts_with("x.rs:4:")));
    let spec = document();
    assert!(
        spec["paths"].get("/v1/secret").is_none(),
        "so such a route would be reported as missing"
    );
}

#[tokio::test]
async fn every_route_is_in_the_spec_and_every_operation_is_routed() {
    let spec = document();
    let documented = operations(&spec);
    let not_api = not_in_spec();
    let excluded: Vec<String> = not_api.iter().map(|(p, _)| p.clone()).collect();

    let mut scanned = Vec::new();
    scan_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut scanned,
    );
    let mut problems: Vec<String> = Vec::new();
    let mut paths: BTreeSet<String> = documented.iter().map(|(p, _)| p.clone()).collect();
    for found in scanned {
        match found {
            Ok(path) if excluded.contains(&path) => {}
            Ok(path) if spec["paths"].get(&path).is_none() => {
                problems.push(format!("{path} is routed but not in the OpenAPI document"));
            }
            Ok(path) => {
                paths.insert(path);
            }
            Err(e) => problems.push(e),
        }
    }

    let h = harness().await;
    for path in &paths {
        let mut answered = BTreeSet::new();
        for method in &METHODS {
            if routed(&h.app, method, &concrete(path)).await {
                answered.insert(method.as_str().to_lowercase());
            }
        }
        let expected: BTreeSet<String> = documented
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, m)| m.clone())
            .collect();
        if answered != expected {
            problems.push(format!(
                "{path}: routed for {answered:?}, documented for {expected:?}"
            ));
        }
    }
    for (path, method) in &not_api {
        assert!(
            routed(&h.app, method, &concrete(path)).await,
            "{method} {path} is listed as routed but is not"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let spec = document();
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["info"]["title"], "leadline");
    fn walk(spec: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(spec, v);
                }
                map.values().for_each(|v| walk(spec, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(spec, v)),
            _ => {}
        }
    }
    walk(&spec, &spec);
    assert_eq!(
        spec["components"]["securitySchemes"]["api_key"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "ll_…",
               "description": "A tenant API key: `Authorization: Bearer ll_…`. The requirement of each operation names the scope it needs."})
    );
}

#[test]
fn every_operation_documents_auth_errors_and_headers() {
    let spec = document();
    let mut problems = Vec::new();
    for (path, method) in operations(&spec) {
        let op = &spec["paths"][&path][&method];
        let at = format!("{} {path}", method.to_uppercase());
        let responses = op["responses"].as_object().unwrap();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let has_param =
            |name: &str, place: &str| params.iter().any(|p| p["name"] == name && p["in"] == place);
        // Every `{param}` of the path is a documented path parameter.
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            if !has_param(name, "path") {
                problems.push(format!("{at}: path parameter {name} undocumented"));
            }
        }
        // Every error is a problem+json with the Problem schema.
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let content = &resolve(&spec, response)["content"];
                let keys: Vec<_> = content.as_object().unwrap().keys().collect();
                if keys != [PROBLEM_JSON]
                    || content[PROBLEM_JSON]["schema"]["$ref"] != "#/components/schemas/Problem"
                {
                    problems.push(format!("{at}: {status} is not a Problem: {content}"));
                }
            }
        }
        let statuses: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
        if path.starts_with("/v1/") {
            let scope = op["security"][0]["api_key"][0]
                .as_str()
                .and_then(|s| s.parse::<leadline_domain::Scope>().ok());
            match scope {
                Some(scope)
                    if op["security"] == json!([{"api_key": [scope.as_str()]}])
                        && op["x-required-role"] == scope.least_role().as_str() => {}
                _ => problems.push(format!(
                    "{at}: needs one bearer scope and its x-required-role, has {} {}",
                    op["security"], op["x-required-role"]
                )),
            }
            for needed in ["401", "403", "500", "503"] {
                if !statuses.contains(needed) {
                    problems.push(format!("{at}: no {needed}"));
                }
            }
        } else if op.get("security").is_some() {
            problems.push(format!("{at}: infrastructure endpoints need no key"));
        }
        if op.get("requestBody").is_some() {
            for needed in ["400", "415", "422"] {
                if !statuses.contains(needed) {
                    problems.push(format!("{at}: has a body but no {needed}"));
                }
            }
        }
        if method == "post" && path.starts_with("/v1/") && !has_param("Idempotency-Key", "header") {
            problems.push(format!("{at}: no Idempotency-Key header"));
        }
        if method == "patch" {
            if !has_param("If-Match", "header") {
                problems.push(format!("{at}: no If-Match header"));
            }
            for needed in ["409", "412", "428"] {
                if !statuses.contains(needed) {
                    problems.push(format!("{at}: no {needed}"));
                }
            }
        }
    }
    // Versioned resources say so in an ETag.
    for (path, method, status) in [
        ("/v1/agents", "post", "201"),
        ("/v1/agents/{id}", "get", "200"),
        ("/v1/agents/{id}", "patch", "200"),
        ("/v1/leads", "post", "201"),
        ("/v1/leads/{id}", "get", "200"),
        ("/v1/leads/{id}", "patch", "200"),
    ] {
        if spec["paths"][path][method]["responses"][status]["headers"]
            .get("ETag")
            .is_none()
        {
            problems.push(format!("{method} {path}: no ETag on {status}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Checks `value` against a JSON Schema of the document: types, enums,
/// lengths, required and undocumented properties (an object schema without
/// `additionalProperties` allows none), `$ref`, `oneOf`/`anyOf`/`allOf`.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    for (key, any) in [("oneOf", true), ("anyOf", true), ("allOf", false)] {
        if let Some(branches) = schema[key].as_array() {
            let passing = branches
                .iter()
                .filter(|b| {
                    let mut e = Vec::new();
                    conforms(spec, b, value, at, &mut e);
                    e.is_empty()
                })
                .count();
            if (any && passing == 0) || (!any && passing < branches.len()) {
                errors.push(format!("{at}: {value} fails {key} {schema}"));
            }
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            t => t.as_str().into_iter().collect(),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} not in {allowed:?}"));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema["maxLength"].as_u64().is_some_and(|max| len > max)
            || schema["minLength"].as_u64().is_some_and(|min| len < min)
        {
            errors.push(format!("{at}: {value} has the wrong length"));
        }
    }
    if let Some(items) = value.as_array() {
        if schema["maxItems"]
            .as_u64()
            .is_some_and(|max| items.len() as u64 > max)
        {
            errors.push(format!("{at}: too many items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                conforms(spec, item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object())
    {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap_or_default()) {
                errors.push(format!("{at}: required {name} is missing"));
            }
        }
        let open = schema
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false));
        for (key, v) in object {
            match properties.get(key) {
                Some(p) => conforms(spec, p, v, &format!("{at}.{key}"), errors),
                None if open => {}
                None => errors.push(format!("{at}: {key} is not in the document")),
            }
        }
    }
}

/// Sends requests and checks each exchange against the document,
/// remembering which operations were exercised.
struct Contract<'h> {
    h: &'h Harness,
    spec: Value,
    seen: BTreeSet<(String, String)>,
    errors: Vec<String>,
}

impl Contract<'_> {
    /// Sends a request whose body the document must accept, and checks the
    /// response.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        uri: &str,
        body: Option<Value>,
    ) -> Reply {
        let m = method.as_str().to_lowercase();
        if let Some(body) = &body {
            let schema = self.spec["paths"][template][&m]["requestBody"]["content"]
                ["application/json"]["schema"]
                .clone();
            let mut errors = Vec::new();
            conforms(&self.spec, &schema, body, "request", &mut errors);
            self.errors.extend(
                errors
                    .into_iter()
                    .map(|e| format!("{} {template}: {e}", method.as_str())),
            );
        }
        let reply = match body {
            Some(b) => self.h.json(method, uri, b).await,
            None => self.h.send(method, uri, &[], None).await,
        };
        self.check(&m, template, &reply);
        reply
    }

    /// Checks a response: its status is documented, with its content type,
    /// its body conforms, and the headers it documents are there.
    fn check(&mut self, method: &str, template: &str, reply: &Reply) {
        let at = format!("{} {template} -> {}", method.to_uppercase(), reply.status);
        self.seen.insert((template.to_owned(), method.to_owned()));
        let op = &self.spec["paths"][template][method];
        let Some(response) = op["responses"].get(reply.status.as_str()) else {
            self.errors.push(format!("{at}: status undocumented"));
            return;
        };
        let response = resolve(&self.spec, response).clone();
        let content_type = reply
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default();
        if response.get("content").is_none() {
            // A response documented without content (204): none must come.
            if !content_type.is_empty() || !reply.body.is_null() {
                self.errors.push(format!(
                    "{at}: documented without content, got {content_type}"
                ));
            }
            return;
        }
        let Some(media) = response["content"].get(content_type) else {
            self.errors.push(format!(
                "{at}: {content_type} not among {}",
                response["content"]
            ));
            return;
        };
        if content_type.ends_with("json") {
            let mut errors = Vec::new();
            conforms(
                &self.spec,
                &media["schema"],
                &reply.body,
                "body",
                &mut errors,
            );
            self.errors
                .extend(errors.into_iter().map(|e| format!("{at}: {e}")));
        }
        for name in ["ETag", "Location", "WWW-Authenticate"] {
            if response["headers"].get(name).is_some() && !reply.headers.contains_key(name) {
                self.errors.push(format!("{at}: documented {name} missing"));
            }
        }
    }
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let h = harness().await;
    let mut c = Contract {
        h: &h,
        spec: document(),
        seen: BTreeSet::new(),
        errors: Vec::new(),
    };
    c.call(Method::GET, "/healthz", "/healthz", None).await;
    c.call(Method::GET, "/readyz", "/readyz", None).await;
    c.call(Method::GET, "/v1/tenant", "/v1/tenant", None).await;

    let agent = c
        .call(
            Method::POST,
            "/v1/agents",
            "/v1/agents",
            Some(json!({"name": "Ada", "email": "ada@example.com"})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dup = c
        .call(
            Method::POST,
            "/v1/agents",
            "/v1/agents",
            Some(json!({"name": "Ada", "email": "ADA@example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let agent_uri = format!("/v1/agents/{agent}");
    c.call(Method::GET, "/v1/agents/{id}", &agent_uri, None)
        .await;
    c.call(Method::GET, "/v1/agents", "/v1/agents?limit=1", None)
        .await;
    let r = c
        .call(
            Method::PATCH,
            "/v1/agents/{id}",
            &agent_uri,
            Some(json!({"version": 1, "role": "admin", "active": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c
        .call(
            Method::PATCH,
            "/v1/agents/{id}",
            &agent_uri,
            Some(json!({"name": "Ada L."})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);

    let lead = c
        .call(
            Method::POST,
            "/v1/leads",
            "/v1/leads",
            Some(
                json!({"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com",
                        "phone": "+1 555 0100 123", "tags": ["vip"], "metadata": {"score": 7},
                        "assigned_agent_id": agent}),
            ),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lead_uri = format!("/v1/leads/{lead}");
    c.call(Method::GET, "/v1/leads/{id}", &lead_uri, None).await;
    c.call(
        Method::GET,
        "/v1/leads/{id}",
        &format!("/v1/leads/{}", uuid::Uuid::now_v7()),
        None,
    )
    .await;
    c.call(
        Method::GET,
        "/v1/leads",
        "/v1/leads?status=new&tag=vip",
        None,
    )
    .await;
    c.call(Method::GET, "/v1/leads", "/v1/leads?limit=0", None)
        .await;
    let r = c
        .call(
            Method::GET,
            "/v1/leads/search",
            "/v1/leads/search?q=gra&tag=vip&metadata=%7B%7D",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let page = &r.body;
    let hit = &page["items"][0];
    assert_eq!(
        hit["matched"],
        serde_json::json!(["first_name", "email"]),
        "{hit}"
    );
    assert_eq!(
        hit["highlights"],
        serde_json::json!([
            {"field": "first_name", "text": "Grace", "marks": [[0, 5]]},
            {"field": "email", "text": "grace@example.com", "marks": [[0, 5]]},
        ]),
        "{hit}"
    );
    c.call(
        Method::GET,
        "/v1/leads/search",
        "/v1/leads/search?q=%2C%2C",
        None,
    )
    .await;
    let r = c
        .call(
            Method::GET,
            "/v1/leads/duplicates",
            "/v1/leads/duplicates?limit=10",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    c.call(
        Method::GET,
        "/v1/leads/duplicates",
        "/v1/leads/duplicates?cursor=bad",
        None,
    )
    .await;
    let r = c
        .call(
            Method::POST,
            "/v1/leads/batch",
            "/v1/leads/batch",
            Some(json!({"items": [
                {"op": "create", "lead": {"first_name": "Bat", "last_name": "Ch"}},
                {"op": "update", "id": uuid::Uuid::now_v7(), "lead": {"version": 1}},
            ]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    c.call(
        Method::POST,
        "/v1/leads/batch",
        "/v1/leads/batch",
        Some(json!({"items": []})),
    )
    .await;
    let r = c
        .call(
            Method::POST,
            "/v1/leads/bulk",
            "/v1/leads/bulk",
            Some(json!({"filter": {"tag": "nobody"}, "set": {"add_tags": ["bulk"]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    c.call(
        Method::POST,
        "/v1/leads/bulk",
        "/v1/leads/bulk",
        Some(json!({"set": {}})),
    )
    .await;
    // Imports: a CSV body in, a run out; its report and rejected rows.
    let csv_type = [("content-type", "text/csv")];
    let people = "first_name,last_name,email\nGrace,Hopper,grace.h@navy.example\nBad,Row,nope\n";
    let r =
        c.h.send(
            Method::POST,
            "/v1/imports?name=people.csv&on_duplicate=skip",
            &csv_type,
            Some(people),
        )
        .await;
    c.check("post", "/v1/imports", &r);
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let import_uri = format!("/v1/imports/{}", r.body["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = c
            .call(Method::GET, "/v1/imports/{id}", &import_uri, None)
            .await;
        if r.body["status"] == "done" {
            assert_eq!(
                (r.body["created"].as_u64(), r.body["rejected"].as_u64()),
                (Some(1), Some(1))
            );
            assert_eq!(r.body["errors"][0]["line"], 3);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "import not done: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r =
        c.h.send(
            Method::POST,
            "/v1/imports?name=people.csv&on_duplicate=skip",
            &csv_type,
            Some(people),
        )
        .await;
    c.check("post", "/v1/imports", &r);
    assert_eq!(r.status, StatusCode::OK, "the same file again: {}", r.body);
    assert_eq!(
        (
            r.body["errors"][0]["line"].clone(),
            r.body["stalled"].clone()
        ),
        (json!(3), json!(false)),
        "the finished run, as GET shows it: {}",
        r.body
    );
    let r = c
        .call(
            Method::GET,
            "/v1/imports/{id}/rejected.csv",
            &format!("{import_uri}/rejected.csv"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    c.call(
        Method::GET,
        "/v1/imports/{id}",
        &format!("/v1/imports/{}", uuid::Uuid::now_v7()),
        None,
    )
    .await;
    let r =
        c.h.send(
            Method::POST,
            "/v1/imports",
            &[("content-type", "application/json")],
            Some("{}"),
        )
        .await;
    c.check("post", "/v1/imports", &r);
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for bad in ["/v1/imports?on_duplicate=merge", "/v1/imports?map=%5B%5D"] {
        let r =
            c.h.send(Method::POST, bad, &csv_type, Some("name\nx y\n"))
                .await;
        c.check("post", "/v1/imports", &r);
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let r =
        c.h.send(
            Method::POST,
            "/v1/imports",
            &csv_type,
            Some("colour\nblue\n"),
        )
        .await;
    c.check("post", "/v1/imports", &r);
    assert_eq!(
        r.body["errors"][0]["field"], "map",
        "no name column: {}",
        r.body
    );

    let r = c
        .call(
            Method::GET,
            "/v1/leads/export",
            "/v1/leads/export?tag=vip",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    c.call(
        Method::GET,
        "/v1/leads/export",
        "/v1/leads/export?q=gra&limit=5",
        None,
    )
    .await;
    c.call(
        Method::GET,
        "/v1/leads/search",
        "/v1/leads/search?q=a&metadata=%5B1%5D",
        None,
    )
    .await;
    let r = c
        .call(
            Method::PATCH,
            "/v1/leads/{id}",
            &lead_uri,
            Some(json!({"version": 1, "status": "contacted", "company": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c
        .call(
            Method::PATCH,
            "/v1/leads/{id}",
            &lead_uri,
            Some(json!({"version": 2, "status": "won"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let approval = c
        .call(
            Method::POST,
            "/v1/leads/{id}/approvals",
            &format!("{lead_uri}/approvals"),
            Some(
                json!({"channel": "email", "subject": "Hi", "body": "Hello Grace",
                        "requested_by": agent}),
            ),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approval_uri = format!("/v1/approvals/{approval}");
    c.call(Method::GET, "/v1/approvals/{id}", &approval_uri, None)
        .await;
    c.call(Method::GET, "/v1/approvals", "/v1/approvals", None)
        .await;
    let sent_too_early = c
        .call(
            Method::POST,
            "/v1/approvals/{id}/send",
            &format!("{approval_uri}/send"),
            Some(json!({"sent_by": agent})),
        )
        .await;
    assert_eq!(sent_too_early.status, StatusCode::CONFLICT);
    let r = c
        .call(
            Method::POST,
            "/v1/approvals/{id}/edit",
            &format!("{approval_uri}/edit"),
            Some(json!({"subject": "Hello", "body": "Hello Grace, again", "edited_by": agent, "revision": 1})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["revision"]),
        (StatusCode::OK, &json!(2)),
        "{}",
        r.body
    );
    for (action, body) in [
        ("approve", json!({"decided_by": agent, "revision": 2})),
        ("send", json!({"sent_by": agent})),
    ] {
        let r = c
            .call(
                Method::POST,
                &format!("/v1/approvals/{{id}}/{action}"),
                &format!("{approval_uri}/{action}"),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{action}: {}", r.body);
    }
    // The send left a delivery: listed, read, not retryable while pending.
    let r = c
        .call(
            Method::GET,
            "/v1/deliveries",
            "/v1/deliveries?status=pending&limit=5",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let delivery_uri = format!(
        "/v1/deliveries/{}",
        r.body["items"][0]["id"].as_str().unwrap()
    );
    c.call(Method::GET, "/v1/deliveries/{id}", &delivery_uri, None)
        .await;
    let r = c
        .call(
            Method::POST,
            "/v1/deliveries/{id}/retry",
            &format!("{delivery_uri}/retry"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["current_status"], "pending");
    let r = c
        .call(
            Method::POST,
            "/v1/deliveries/{id}/retry",
            &format!("/v1/deliveries/{}/retry", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = c
        .call(
            Method::GET,
            "/v1/deliveries",
            "/v1/deliveries?status=sent",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // The change feed as a JSON page (the stream is tested over TCP in the
    // integration suite).
    let r = c
        .call(
            Method::GET,
            "/v1/changes",
            "/v1/changes?types=approval&limit=10",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["items"][0]["type"], "approval.drafted", "{}", r.body);
    let r = c
        .call(
            Method::GET,
            "/v1/changes",
            "/v1/changes?after=not-a-position",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // The audit trail: the approval drafted above is its newest record.
    let r = c
        .call(
            Method::GET,
            "/v1/audit",
            "/v1/audit?entity=approval&limit=5",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["items"][0]["entity"], "approval", "{}", r.body);
    let r = c
        .call(Method::GET, "/v1/audit", "/v1/audit?entity=nonsense", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // Analytics: the SQLite store counts when asked, so today's leads show.
    let r = c
        .call(
            Method::GET,
            "/v1/analytics/funnel",
            "/v1/analytics/funnel?interval=week",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body["stages"][0]["entered"].as_u64() > Some(0),
        "{}",
        r.body
    );
    let r = c
        .call(
            Method::GET,
            "/v1/analytics/funnel",
            "/v1/analytics/funnel?from=2026-02-30",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = c
        .call(
            Method::GET,
            "/v1/analytics/agents",
            "/v1/analytics/agents",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        !r.body["agents"].as_array().is_none_or(Vec::is_empty),
        "{}",
        r.body
    );
    let r = c
        .call(
            Method::GET,
            "/v1/analytics/activity",
            "/v1/analytics/activity?from=2026-01-01&to=2026-12-31",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Retention: set, read back, refused when half given.
    let r = c
        .call(
            Method::PUT,
            "/v1/settings/retention",
            "/v1/settings/retention",
            Some(json!({"events_older_than_days": 365, "action": "archive"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c
        .call(
            Method::GET,
            "/v1/settings/retention",
            "/v1/settings/retention",
            None,
        )
        .await;
    assert_eq!(r.body["events_older_than_days"], 365, "{}", r.body);
    let r = c
        .call(
            Method::PUT,
            "/v1/settings/retention",
            "/v1/settings/retention",
            Some(json!({"events_older_than_days": 365})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // A privacy export: the person, or nobody.
    let r = c
        .call(
            Method::POST,
            "/v1/privacy/export",
            "/v1/privacy/export",
            Some(json!({"email": "nobody@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["leads"], json!([]), "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/v1/privacy/export",
            "/v1/privacy/export",
            Some(json!({"email": "nope"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // An erasure of nobody is an erasure of nothing; a bad email is a 422.
    let r = c
        .call(
            Method::POST,
            "/v1/privacy/erase",
            "/v1/privacy/erase",
            Some(json!({"email": "nobody@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["leads"], json!([]), "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/v1/privacy/erase",
            "/v1/privacy/erase",
            Some(json!({"email": "nope"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = c
        .call(
            Method::GET,
            "/v1/settings/email",
            "/v1/settings/email",
            None,
        )
        .await;
    assert_eq!(r.body, json!({"sender": null}));
    let sender = json!({
        "from_email": "Team@Acme.example",
        "from_name": "Acme",
        "reply_to": null,
        "unsubscribe": "https://acme.example/u"
    });
    let r = c
        .call(
            Method::PUT,
            "/v1/settings/email",
            "/v1/settings/email",
            Some(sender),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sender"]["from_email"], "team@acme.example");
    let r = c
        .call(
            Method::PUT,
            "/v1/settings/email",
            "/v1/settings/email",
            Some(json!({"from_email": "team@acme.example", "unsubscribe": "javascript:alert(1)"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "unsubscribe", "{}", r.body);
    let r = c
        .call(
            Method::GET,
            "/v1/settings/email",
            "/v1/settings/email",
            None,
        )
        .await;
    assert_eq!(r.body["sender"]["unsubscribe"], "https://acme.example/u");
    let r = c
        .call(
            Method::PUT,
            "/v1/settings/approvals",
            "/v1/settings/approvals",
            Some(json!({"separation_of_duties": true})),
        )
        .await;
    assert_eq!(r.body, json!({"separation_of_duties": true}), "{}", r.body);
    let r = c
        .call(
            Method::PUT,
            "/v1/settings/approvals",
            "/v1/settings/approvals",
            Some(json!({"separation_of_duties": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c
        .call(
            Method::GET,
            "/v1/settings/approvals",
            "/v1/settings/approvals",
            None,
        )
        .await;
    assert_eq!(r.body, json!({"separation_of_duties": false}), "{}", r.body);
    let created = c
        .call(
            Method::POST,
            "/v1/webhooks",
            "/v1/webhooks",
            Some(json!({"url": "https://hooks.acme.example/in", "types": ["lead.created", "approval"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        created.headers["cache-control"], "no-store",
        "a secret is never cached"
    );
    assert!(secret.starts_with("whsec_"), "{}", created.body);
    let hook = created.body["webhook"]["id"].as_str().unwrap().to_owned();
    let hook_uri = format!("/v1/webhooks/{hook}");
    for bad in [
        json!({"url": "ftp://hooks.acme.example/in"}),
        json!({"url": "https://user:pw@hooks.acme.example/in"}),
        json!({"url": "https://hooks.acme.example/in", "types": ["lead.exploded"]}),
        json!({"url": "https://hooks.acme.example/in", "channels": ["email"]}),
        json!({"url": "https://hooks.acme.example/in", "channels": ["fax"]}),
        json!({"url": "https://hooks.acme.example/in", "changes": false}),
    ] {
        let r = c
            .call(
                Method::POST,
                "/v1/webhooks",
                "/v1/webhooks",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let field = if bad.get("channels").is_some() || bad.get("changes").is_some() {
            "channels"
        } else if bad.get("types").is_some() {
            "types"
        } else {
            "url"
        };
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
    }
    let texts = c
        .call(
            Method::POST,
            "/v1/webhooks",
            "/v1/webhooks",
            Some(json!({"url": "https://texts.acme.example/send", "changes": false, "channels": ["sms", "call", "sms"]})),
        )
        .await;
    assert_eq!(texts.status, StatusCode::CREATED, "{}", texts.body);
    assert_eq!(
        (
            &texts.body["webhook"]["changes"],
            &texts.body["webhook"]["channels"]
        ),
        (&json!(false), &json!(["call", "sms"])),
        "{}",
        texts.body
    );
    let taken = c
        .call(
            Method::POST,
            "/v1/webhooks",
            "/v1/webhooks",
            Some(json!({"url": "https://other.acme.example/send", "channels": ["sms"]})),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert_eq!(
        taken.body["errors"][0]["field"], "channels",
        "{}",
        taken.body
    );
    let texts_uri = format!(
        "/v1/webhooks/{}",
        texts.body["webhook"]["id"].as_str().unwrap()
    );
    let r = c
        .call(Method::DELETE, "/v1/webhooks/{id}", &texts_uri, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c
        .call(Method::GET, "/v1/webhooks", "/v1/webhooks?limit=5", None)
        .await;
    assert_eq!(r.body["items"][0]["id"], hook.as_str(), "{}", r.body);
    assert!(r.body["items"][0].get("secret").is_none(), "never listed");
    assert!(
        !r.body.to_string().contains(&secret[6..]),
        "no secret in a list"
    );
    let r = c
        .call(Method::GET, "/v1/webhooks/{id}", &hook_uri, None)
        .await;
    assert_eq!(
        r.body["types"],
        json!([
            "lead.created",
            "approval.drafted",
            "approval.edited",
            "approval.approved",
            "approval.rejected",
            "approval.cancelled",
            "approval.sent"
        ])
    );
    let r = c
        .call(
            Method::PATCH,
            "/v1/webhooks/{id}",
            &hook_uri,
            Some(json!({"version": 1, "active": false, "types": []})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["active"].clone()),
        (StatusCode::OK, json!(false)),
        "{}",
        r.body
    );
    let r = c
        .call(
            Method::PATCH,
            "/v1/webhooks/{id}",
            &hook_uri,
            Some(json!({"version": 1, "active": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/v1/webhooks/{id}/rotate",
            &format!("{hook_uri}/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_ne!(r.body["secret"].as_str().unwrap(), secret, "a new secret");
    assert!(
        r.body["webhook"]["previous_secret_expires_at"].is_string(),
        "{}",
        r.body
    );
    let r = c
        .call(
            Method::GET,
            "/v1/webhooks/{id}/dead-letters",
            &format!("{hook_uri}/dead-letters?limit=5"),
            None,
        )
        .await;
    assert_eq!(r.body, json!({"items": []}), "nothing refused yet");
    let r = c
        .call(Method::DELETE, "/v1/webhooks/{id}", &hook_uri, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c
        .call(Method::GET, "/v1/webhooks/{id}", &hook_uri, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    exercise_users(&mut c).await;
    let viewer_key = exercise_keys(&mut c).await;
    let viewer = Harness {
        app: h.app.clone(),
        key: viewer_key,
        composition: super::Wired::over(h.composition.store().clone()),
    };
    let r = viewer
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "application/json")],
            Some(r#"{"first_name": "Ada", "last_name": "Lovelace"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        (&r.body["required_scope"], &r.body["required_role"]),
        (&json!("leads:write"), &json!("agent")),
        "{}",
        r.body
    );
    c.check("post", "/v1/leads", &r);
    for (action, body) in [
        (
            "reject",
            json!({"decided_by": agent, "reason": "Too pushy"}),
        ),
        ("cancel", json!({"cancelled_by": agent})),
    ] {
        let draft = c
            .call(
                Method::POST,
                "/v1/leads/{id}/approvals",
                &format!("{lead_uri}/approvals"),
                Some(json!({"channel": "sms", "body": "Hi", "requested_by": agent})),
            )
            .await;
        let r = c
            .call(
                Method::POST,
                &format!("/v1/approvals/{{id}}/{action}"),
                &format!(
                    "/v1/approvals/{}/{action}",
                    draft.body["id"].as_str().unwrap()
                ),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{action}: {}", r.body);
    }

    let events = format!("{lead_uri}/events");
    let r = c
        .call(
            Method::POST,
            "/v1/leads/{id}/events",
            &events,
            Some(
                json!({"kind": "call", "direction": "inbound", "content": "Called back",
                        "actor": agent, "occurred_at": chrono::Utc::now()}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Before the lead existed: a 422 naming occurred_at, as documented.
    let r = c
        .call(
            Method::POST,
            "/v1/leads/{id}/events",
            &events,
            Some(json!({"kind": "call", "direction": "inbound",
                        "occurred_at": "2024-01-02T03:04:05Z"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "occurred_at");
    c.call(
        Method::GET,
        "/v1/leads/{id}/events",
        &format!("{events}?limit=1"),
        None,
    )
    .await;
    let ctx = c
        .call(
            Method::GET,
            "/v1/leads/{id}/context",
            &format!("{lead_uri}/context"),
            None,
        )
        .await;
    assert_eq!(ctx.status, StatusCode::OK);
    c.call(Method::GET, "/v1/cache/stats", "/v1/cache/stats", None)
        .await;
    c.call(
        Method::POST,
        "/v1/cache/preload",
        "/v1/cache/preload?limit=5",
        None,
    )
    .await;

    // Delete and restore: 204, 404 once deleted, 409 with an open approval.
    let doomed = c
        .call(
            Method::POST,
            "/v1/leads",
            "/v1/leads",
            Some(json!({"first_name": "Del", "last_name": "Eted"})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let doomed_uri = format!("/v1/leads/{doomed}");
    let restore_uri = format!("{doomed_uri}/restore");
    c.call(
        Method::POST,
        "/v1/leads/{id}/approvals",
        &format!("{doomed_uri}/approvals"),
        Some(json!({"channel": "sms", "body": "Hi", "requested_by": agent})),
    )
    .await;
    let r = c
        .call(Method::DELETE, "/v1/leads/{id}", &doomed_uri, None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["open_approvals"], 1);
    let spare = c
        .call(
            Method::POST,
            "/v1/leads",
            "/v1/leads",
            Some(json!({"first_name": "Spare", "last_name": "Lead"})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spare_uri = format!("/v1/leads/{spare}");
    let r = c
        .call(Method::DELETE, "/v1/leads/{id}", &spare_uri, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = c
        .call(Method::DELETE, "/v1/leads/{id}", &spare_uri, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = c
        .call(
            Method::POST,
            "/v1/leads/{id}/restore",
            &format!("{spare_uri}/restore"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 3);
    let r = c
        .call(Method::POST, "/v1/leads/{id}/restore", &restore_uri, None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a live lead has nothing to restore"
    );

    // Errors that no happy path reaches: a body that is not JSON, a
    // malformed one, a bad key.
    let r = h
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "text/plain")],
            Some("{}"),
        )
        .await;
    c.check("post", "/v1/leads", &r);
    let r = h
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "application/json")],
            Some("{"),
        )
        .await;
    c.check("post", "/v1/leads", &r);
    let anonymous = Harness {
        app: h.app.clone(),
        key: "ll_not-a-key".to_owned(),
        composition: super::Wired::over(h.composition.store().clone()),
    };
    let r = anonymous.send(Method::GET, "/v1/tenant", &[], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    c.check("get", "/v1/tenant", &r);

    // /metrics is text; checked last so it has seen the requests above.
    let res = h
        .app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let metrics = Reply {
        status: res.status(),
        headers: res.headers().clone(),
        body: Value::Null,
    };
    c.check("get", "/metrics", &metrics);

    let unexercised: Vec<_> = operations(&c.spec).difference(&c.seen).cloned().collect();
    assert!(unexercised.is_empty(), "not exercised: {unexercised:?}");
    assert!(c.errors.is_empty(), "{}", c.errors.join("\n"));
}

/// Invites, lists, reads, changes and re-links users through `c`.
async fn exercise_users(c: &mut Contract<'_>) {
    let invited = c
        .call(
            Method::POST,
            "/v1/users",
            "/v1/users",
            Some(json!({"email": "Ada@Acme.example", "name": "Ada", "role": "approver"})),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    assert_eq!(invited.headers["cache-control"], "no-store");
    let link = invited.body["login_link"].as_str().unwrap().to_owned();
    assert!(link.starts_with("/login/link/lll_"), "{link}");
    let user = &invited.body["user"];
    assert_eq!(
        (&user["email"], &user["role"], &user["has_password"]),
        (
            &json!("ada@acme.example"),
            &json!("approver"),
            &json!(false)
        )
    );
    assert!(user["agent_id"].is_string(), "acts as an agent: {user}");
    let id = user["id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/users/{id}");
    for (bad, field) in [
        (json!({"email": "nope", "role": "agent"}), "email"),
        (json!({"email": "b@acme.example", "role": "root"}), "role"),
    ] {
        let r = c
            .call(Method::POST, "/v1/users", "/v1/users", Some(bad.clone()))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["field"], field, "{bad}: {}", r.body);
    }
    // Off the schema (no role): refused naming it, outside the contract.
    let r =
        c.h.json(
            Method::POST,
            "/v1/users",
            json!({"email": "b@acme.example"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "role", "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/v1/users",
            "/v1/users",
            Some(json!({"email": "ada@acme.example", "role": "agent"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = c
        .call(Method::GET, "/v1/users", "/v1/users?limit=10", None)
        .await;
    assert_eq!(r.body["items"][0]["id"], id.as_str(), "{}", r.body);
    assert!(!r.body.to_string().contains("lll_"), "no link in a list");
    let r = c.call(Method::GET, "/v1/users/{id}", &uri, None).await;
    assert_eq!(r.headers[header::ETAG], "\"1\"");
    let r = c
        .call(
            Method::PATCH,
            "/v1/users/{id}",
            &uri,
            Some(json!({"version": 1, "role": "viewer", "disabled": true})),
        )
        .await;
    assert_eq!(
        (
            &r.body["role"],
            r.body["disabled_at"].is_string(),
            &r.body["version"]
        ),
        (&json!("viewer"), true, &json!(2)),
        "{}",
        r.body
    );
    let r = c
        .call(
            Method::PATCH,
            "/v1/users/{id}",
            &uri,
            Some(json!({"version": 1, "disabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/v1/users/{id}/link",
            &format!("{uri}/link"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_ne!(r.body["login_link"].as_str().unwrap(), link, "a new link");
}

/// Issues, lists, reads, rotates and revokes API keys through `c`; returns
/// the secret of a live viewer key.
async fn exercise_keys(c: &mut Contract<'_>) -> String {
    let issued = c
        .call(
            Method::POST,
            "/v1/keys",
            "/v1/keys",
            Some(json!({"name": "CRM sync", "role": "viewer", "expires_at": "2999-01-01T00:00:00.123456789Z"})),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    assert_eq!(issued.headers["cache-control"], "no-store");
    let secret = issued.body["secret"].as_str().unwrap().to_owned();
    let key = &issued.body["key"];
    assert!(secret.starts_with("ll_"), "{}", issued.body);
    assert_eq!(
        (
            &key["role"],
            &key["scopes"],
            &key["status"],
            &key["expires_at"]
        ),
        (
            &json!("viewer"),
            &Value::Null,
            &json!("active"),
            &json!("2999-01-01T00:00:00.123456Z")
        ),
        "{}",
        issued.body
    );
    let prefix = key["prefix"].as_str().unwrap();
    assert!(
        secret.ends_with(&secret[secret.len() - 48..])
            && secret[secret.len() - 48..].starts_with(prefix),
        "the prefix starts the secret part: {prefix} {}",
        &secret[..12]
    );
    let id = key["id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/keys/{id}");
    for (bad, field) in [
        (json!({"name": "x"}), "role"),
        (json!({"name": "x", "role": "root"}), "role"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "scopes": ["read", "sudo"]}), "scopes"),
        (
            json!({"name": "x", "role": "viewer", "scopes": ["read"]}),
            "scopes",
        ),
        (json!({"name": " ", "role": "viewer"}), "name"),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "2000-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "soon"}),
            "expires_at",
        ),
    ] {
        let r = c
            .call(Method::POST, "/v1/keys", "/v1/keys", Some(bad.clone()))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["field"], field, "{bad}: {}", r.body);
    }
    let scoped = c
        .call(
            Method::POST,
            "/v1/keys",
            "/v1/keys",
            Some(json!({"name": "events only", "scopes": ["events:write", "read"]})),
        )
        .await;
    assert_eq!(scoped.status, StatusCode::CREATED, "{}", scoped.body);
    assert_eq!(
        (&scoped.body["key"]["role"], &scoped.body["key"]["scopes"]),
        (&Value::Null, &json!(["read", "events:write"])),
        "{}",
        scoped.body
    );
    let r = c
        .call(Method::GET, "/v1/keys", "/v1/keys?limit=100", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str()),
        "{}",
        r.body
    );
    assert!(
        !r.body.to_string().contains(&secret[40..]),
        "no secret in a list"
    );
    let r = c.call(Method::GET, "/v1/keys/{id}", &uri, None).await;
    assert_eq!(r.body["name"], "CRM sync", "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/v1/keys/{id}/rotate",
            &format!("{uri}/rotate?overlap_seconds=999999"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(
        r.body["errors"][0]["field"], "overlap_seconds",
        "{}",
        r.body
    );
    let rotated = c
        .call(
            Method::POST,
            "/v1/keys/{id}/rotate",
            &format!("{uri}/rotate?overlap_seconds=3600"),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    assert_eq!(rotated.body["previous"]["id"], id.as_str());
    assert_eq!(rotated.body["key"]["name"], "CRM sync");
    assert_eq!(rotated.body["key"]["role"], "viewer");
    assert!(rotated.body["previous"]["expires_at"].as_str().unwrap() < "2999");
    let successor = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(successor, secret);
    let r = c.call(Method::DELETE, "/v1/keys/{id}", &uri, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.call(Method::GET, "/v1/keys/{id}", &uri, None).await;
    assert_eq!(r.body["status"], "revoked", "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/v1/keys/{id}/rotate",
            &format!("{uri}/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let missing = format!("/v1/keys/{}", uuid::Uuid::now_v7());
    let r = c
        .call(Method::DELETE, "/v1/keys/{id}", &missing, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    successor
}

/// A GET through the router, raw.
async fn get_raw(app: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = app
        .clone()
        .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, bytes)
}

#[tokio::test]
async fn the_document_and_the_docs_page_are_served_from_the_binary() {
    let h = harness().await;
    let (status, headers, bytes) = get_raw(&h.app, SPEC_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served, document(), "the document the router was built with");

    let (status, headers, _) = get_raw(&h.app, DOCS_PATH).await;
    assert!(status.is_redirection(), "{status}");
    let page = headers[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(page, format!("{DOCS_PATH}/"));
    let (status, headers, bytes) = get_raw(&h.app, &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(bytes).unwrap();

    // Every asset the page names is same-origin, and is served.
    let mut assets = BTreeMap::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let url = html[at + attr.len()..].split('"').next().unwrap();
            assert!(
                !url.contains("://") && !url.starts_with("//"),
                "{url} is not same-origin"
            );
            let path = format!("{page}{}", url.trim_start_matches("./"));
            assets.insert(path, url.to_owned());
        }
    }
    assert!(
        assets.keys().any(|p| p.ends_with("swagger-ui-bundle.js")),
        "{html}"
    );
    for path in assets.keys() {
        let (status, headers, bytes) = get_raw(&h.app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!bytes.is_empty(), "{path}");
        if path.ends_with(".js") {
            let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
            assert!(
                content_type.contains("javascript"),
                "{path}: {content_type}"
            );
        }
    }
    let (_, _, bundle) = get_raw(&h.app, &format!("{page}swagger-ui-bundle.js")).await;
    assert!(bundle.len() > 100_000, "the whole Swagger UI bundle");

    // The page loads the document from here, and nothing from elsewhere.
    let (_, _, init) = get_raw(&h.app, &format!("{page}swagger-initializer.js")).await;
    let init = String::from_utf8(init).unwrap();
    assert!(init.contains(&format!("\"{SPEC_PATH}\"")), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    assert!(!init.contains("://"), "{init}");
}
