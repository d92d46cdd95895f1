//! Set-wise re-ranking through a real cluster, with a tiny llama model written by the test
//! (random weights, a real GGUF file, SmolLM2's tokenizer): loading, prompts, one-pass
//! scoring, batching, the NIL option, greedy generation; then the real default model.

use std::time::Duration;

use belink_e2e::{cluster, status, wait_until, workspace};
use postgres::Client;

fn use_reranker(client: &mut Client, path: &str) {
    client.execute(&format!("ALTER SYSTEM SET belink.reranker_model = '{path}'"), &[]).unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(Duration::from_secs(120), || {
        let s = status(&mut cluster().connect());
        s["reranker_model"].as_str() == Some(path)
    });
}

fn reset_reranker(client: &mut Client) {
    client.batch_execute("ALTER SYSTEM RESET belink.reranker_model").unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
}

fn load_medic(client: &mut Client) {
    let medic = std::fs::read_to_string(workspace().join("tests/fixtures/medic_excerpt.txt")).unwrap();
    client.query_one("SELECT concepts FROM belink_load_ontology_text('medic_rerank', $1)", &[&medic]).unwrap();
}

#[test]
fn a_tiny_model_goes_through_the_whole_path() {
    let dir = std::env::temp_dir().join(format!("belink-e2e-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = workspace().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let tiny = belink_models::llm::testing::write_tiny_llama(&dir.join("tiny.gguf"), &source).unwrap();
    std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).status().unwrap();
    let tiny = tiny.display().to_string();
    let mut client = cluster().connect();
    load_medic(&mut client);
    use_reranker(&mut client, &tiny);
    // The model is loaded by the first request that needs it, not before.
    let state = status(&mut client)["reranker_state"].as_str().unwrap().to_string();
    assert!(state.starts_with("not loaded yet"), "{state}");
    // The re-ranker's own choices, ungated, near ties or not.
    client
        .batch_execute(
            "SET belink.rerank = on; SET belink.retrieval = 'lexical'; SET belink.rerank_override_threshold = 0; \
             SET belink.rerank_none_threshold = 0; SET belink.rerank_margin = 1",
        )
        .unwrap();

    // Not an exact match: the re-ranker decides, with one probability per candidate and one
    // for "none of these".
    let row = client
        .query_one(
            "SELECT decided_by, nil_probability, candidates FROM belink_normalize('colorectal cancr', 'Patients with [colorectal cancr].', 'medic_rerank', 4)",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "reranker");
    assert_eq!(status(&mut client)["reranker_state"], "loaded");
    let nil: f64 = row.get(1);
    let candidates: serde_json::Value = row.get(2);
    let probabilities: Vec<f64> =
        candidates.as_array().unwrap().iter().map(|c| c["probability"].as_f64().unwrap()).collect();
    assert!(!probabilities.is_empty());
    assert!((probabilities.iter().sum::<f64>() + nil - 1.0).abs() < 1e-4, "{probabilities:?} + {nil}");

    // An exact match to one concept skips the LLM, and says so.
    let decided: String = client
        .query_one("SELECT decided_by FROM belink_normalize('breast cancer', NULL, 'medic_rerank')", &[])
        .unwrap()
        .get(0);
    assert_eq!(decided, "exact");

    // Many mentions in one request are scored in batched forward passes.
    let before = status(&mut client)["rerank_items"].as_u64().unwrap();
    let rows = client
        .query(
            "SELECT * FROM belink_normalize(ARRAY['colorectal cancr', 'breast cancr', 'adenomatous poliposis', 'tooth agenesis 6', 'maturity onset diabetes'], ontology => 'medic_rerank', k => 3)",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 5);
    let after = status(&mut client);
    assert_eq!(after["rerank_items"].as_u64().unwrap() - before, 5);
    assert!(after["rerank_max_items_per_batch"].as_u64().unwrap() >= 5);

    // The NIL option: a threshold above every probability leaves the mention unlinked.
    client.batch_execute("SET belink.nil_threshold = 1.0").unwrap();
    let concept: Option<String> = client
        .query_one("SELECT concept_id FROM belink_normalize('colorectal cancr', NULL, 'medic_rerank')", &[])
        .unwrap()
        .get(0);
    assert_eq!(concept, None);
    client.batch_execute("RESET belink.nil_threshold").unwrap();

    // Greedy generation, the reference mode, reports its answer.
    client.batch_execute("SET belink.rerank_mode = 'generate'").unwrap();
    let candidates: serde_json::Value = client
        .query_one("SELECT candidates FROM belink_normalize('colorectal cancr', NULL, 'medic_rerank', 3)", &[])
        .unwrap()
        .get(0);
    assert!(candidates["answer"].is_string(), "{candidates}");
    client.batch_execute("RESET belink.rerank_mode; RESET belink.rerank; RESET belink.retrieval; RESET belink.rerank_override_threshold; RESET belink.rerank_none_threshold; RESET belink.rerank_margin").unwrap();
    reset_reranker(&mut client);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_default_model_reranks_and_links() {
    let mut client = cluster().connect();
    load_medic(&mut client);
    reset_reranker(&mut client);
    wait_until(Duration::from_secs(120), || {
        let s = status(&mut cluster().connect());
        s["reranker_model"].as_str().is_some_and(|m| m.ends_with("gemma-3-270m-q4_k_m.gguf")) && s["state"] == "running"
    });
    // The default model comes with the adapter tuned for it (make train-reranker).
    let adapter = status(&mut client)["reranker_adapter"].clone();
    assert!(adapter.as_str().is_some_and(|a| a.ends_with("gemma3-270m-belink-names-lora.safetensors")), "{adapter}");
    client
        .batch_execute(
            "SET belink.rerank = on; SET belink.rerank_override_threshold = 0; SET belink.rerank_none_threshold = 0; \
             SET belink.rerank_margin = 1",
        )
        .unwrap();
    let row = client
        .query_one(
            "SELECT decided_by, concept_id FROM belink_normalize('colorectal cancr', NULL, 'medic_rerank', 5)",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "reranker");
    // belink.reranker_bf16 is on by default: bfloat16 products wherever the CPU has AMX.
    let cpu_has_amx = std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|info| ["amx_bf16", "amx_tile"].iter().all(|flag| info.split_whitespace().any(|f| f == *flag)));
    let products = status(&mut client)["reranker_products"].clone();
    assert_eq!(products, if cpu_has_amx { "bfloat16 on AMX" } else { "f32" });
    // Linking with re-ranking on still returns entities with their spans.
    let entities: serde_json::Value =
        client.query_one("SELECT belink_link('Her mother had breast cancer.', 'medic_rerank')", &[]).unwrap().get(0);
    assert_eq!(entities[0]["mention"], "breast cancer");
    client
        .batch_execute(
            "RESET belink.rerank; RESET belink.rerank_override_threshold; RESET belink.rerank_none_threshold; \
             RESET belink.rerank_margin",
        )
        .unwrap();
}
