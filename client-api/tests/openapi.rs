//! The OpenAPI document in `spec/openapi.json` is the one the code generates: a change to a
//! handler or a wire type shows up in review as a change to the document.
//! `HEARTH_BLESS=1 cargo test -p hearth-client-api --test openapi` rewrites it.

#[test]
fn the_document_in_spec_is_the_one_the_code_generates() {
    let generated = format!("{}\n", hearth_client_api::openapi::json());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/openapi.json");
    if std::env::var_os("HEARTH_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "spec/openapi.json is not what the code generates; rerun with HEARTH_BLESS=1 and review the diff"
    );
}

#[test]
fn every_operation_declares_its_errors_and_protected_ones_their_scheme() {
    let doc: serde_json::Value = serde_json::from_str(hearth_client_api::openapi::json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let public = [
        "/v1/health",
        "/v1/ready",
        "/v1/limits",
        "/v1/register",
        "/v1/login",
        "/v1/refresh",
        "/v1/pushers/vapid",
    ];
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                op["responses"]["default"].is_object(),
                "{method} {path} has no default error response"
            );
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(
                secured,
                !public.contains(&path.as_str()),
                "{method} {path}: security does not match whether it needs a token"
            );
        }
    }
    assert!(operations >= 50, "only {operations} operations documented");
}
