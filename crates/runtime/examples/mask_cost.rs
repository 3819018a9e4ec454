//! What constrained decoding costs per token on the 6B models' vocabularies: ChatGLM3's
//! SentencePiece (65,024 ids) and GLM-4's tiktoken BPE (151,552 ids), from the real tokenizers
//! in `../shared/reference/`. For each grammar, random walks (random logits at every step, so
//! the walk goes wherever the grammar lets it) time the mask (`Constraint::apply`: llguidance's
//! token mask plus setting the logits) and the commit of the picked token, per step.
//!
//! ```text
//! cargo run --release -p glm-runtime --example mask_cost [WALKS]
//! ```

use std::path::Path;
use std::time::Instant;

use glm_convert::spm::{chatglm3_vocab, SpmModel};
use glm_convert::tiktoken::{glm4_vocab, TiktokenModel};
use glm_runtime::chat::stop_ids;
use glm_runtime::constraint::{Grammar, OutputSpec, Shape, ToolSpec};
use glm_runtime::sampler::{Sampler, SamplerOptions};
use glm_runtime::tokenizer::Tokenizer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn main() {
    let walks: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference");
    let mut vocabs: Vec<(&str, Tokenizer)> = Vec::new();
    match SpmModel::from_file(shared.join("chatglm3/tokenizer.model")) {
        Ok(spm) => {
            let v = chatglm3_vocab(&spm, 65024).unwrap();
            vocabs.push((
                "ChatGLM3 (65,024)",
                Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap(),
            ));
        }
        Err(e) => eprintln!("ChatGLM3 tokenizer: {e}"),
    }
    match TiktokenModel::from_file(&shared.join("glm-4-9b-chat/tokenizer.model")) {
        Ok(m) => {
            let v = glm4_vocab(&m, 151552).unwrap();
            vocabs.push((
                "GLM-4 (151,552)",
                Tokenizer::from_byte_level_vocab(&v.tokens, &v.token_types).unwrap(),
            ));
        }
        Err(e) => eprintln!("GLM-4 tokenizer: {e}"),
    }
    let schema = json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "kind": {"enum": ["book", "film", "song"]},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3},
            "author": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                "born": {"type": "integer", "minimum": 1800, "maximum": 2020}},
                "required": ["name"], "additionalProperties": false}
        },
        "required": ["id", "kind", "year", "tags", "author"],
        "additionalProperties": false
    });
    let gbnf = "root ::= expr\nexpr ::= term ((\"+\" | \"-\" | \"*\") term){0,8}\nterm ::= [0-9]{1,3} | \"(\" term \"+\" term \")\"\n";
    let tool = ToolSpec::from_tools(&json!([{"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}, "alerts": {"type": "boolean"}},
        "required": ["city", "alerts"]}}]));
    println!("| vocabulary | grammar | setup | steps | mask mean | mask p50 | mask p95 | mask max | commit mean |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, tok) in &vocabs {
        let t0 = Instant::now();
        let g = tok.grammars().unwrap();
        let setup = t0.elapsed().as_secs_f64();
        println!(
            "| {name} | (trie + llguidance tables, once per model) | {:.0} ms | | | | | | |",
            setup * 1e3
        );
        // for scale: the sampler's own step (temperature 1: a sort of the whole vocabulary)
        let mut s = Sampler::new(SamplerOptions {
            temperature: 1.0,
            top_p: 1.0,
            ..Default::default()
        });
        let mut rng = StdRng::seed_from_u64(1);
        let mut total = 0.0;
        for _ in 0..200 {
            let logits: Vec<f32> = (0..tok.vocab_size())
                .map(|_| rng.gen::<f32>() * 4.0)
                .collect();
            let t0 = Instant::now();
            s.sample(&logits, &[]).unwrap();
            total += t0.elapsed().as_secs_f64();
        }
        println!(
            "| {name} | (no grammar: the sampler's step, temperature 1) | | 200 | {:.3} ms | | | | |",
            total / 200.0 * 1e3
        );
        let reply = Shape::Reply(tok.vocab_chat_format());
        let cases: Vec<(&str, OutputSpec, Shape)> = vec![
            (
                "JSON Schema (nested), chat reply",
                OutputSpec {
                    content: Some(Grammar::JsonSchema(schema.clone())),
                    ..Default::default()
                },
                reply,
            ),
            (
                "GBNF arithmetic, text",
                OutputSpec {
                    content: Some(Grammar::Gbnf(gbnf.into())),
                    ..Default::default()
                },
                Shape::Text,
            ),
            (
                "forced tool call",
                OutputSpec {
                    content: None,
                    tools: tool.clone(),
                    call_required: true,
                },
                reply,
            ),
        ];
        let stops = stop_ids(tok);
        for (label, spec, shape) in cases {
            let mut masks = Vec::new();
            let mut commits = Vec::new();
            let mut compile = 0.0;
            for seed in 0..walks {
                let t0 = Instant::now();
                let mut c = g.compile(&spec, shape, &stops).unwrap();
                compile += t0.elapsed().as_secs_f64();
                let mut rng = StdRng::seed_from_u64(seed);
                let mut s = Sampler::new(SamplerOptions {
                    temperature: 1.0,
                    top_p: 1.0,
                    seed,
                    ..Default::default()
                });
                for _ in 0..400 {
                    let mut logits: Vec<f32> = (0..tok.vocab_size())
                        .map(|_| rng.gen::<f32>() * 4.0)
                        .collect();
                    tok.mask_unsampleable(&mut logits);
                    let t0 = Instant::now();
                    c.apply(&mut logits).unwrap();
                    masks.push(t0.elapsed().as_secs_f64());
                    let id = s.sample(&logits, &[]).unwrap();
                    if stops.contains(&id) {
                        break;
                    }
                    let t0 = Instant::now();
                    c.accept(id).unwrap();
                    commits.push(t0.elapsed().as_secs_f64());
                }
            }
            masks.sort_by(f64::total_cmp);
            let ms = |x: f64| format!("{:.3} ms", x * 1e3);
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let q = |p: f64| masks[((masks.len() - 1) as f64 * p) as usize];
            println!(
                "| {name} | {label} | {} | {} | {} | {} | {} | {} | {} |",
                ms(compile / walks as f64),
                masks.len(),
                ms(mean(&masks)),
                ms(q(0.5)),
                ms(q(0.95)),
                ms(masks[masks.len() - 1]),
                ms(mean(&commits)),
            );
        }
    }
}
