//! The type mixes against llama.cpp 2026's own choices: tests/fixtures/quant-mix/mixes.txt holds
//! what `llama-quantize --dry-run` picked for every tensor of two ChatGLM-shaped models, for
//! every file type with and without `--pure`, an imatrix, and `--output-tensor-type` /
//! `--token-embedding-type` (regenerate with `bash tools/make_mix_golden.sh`).

use gguf::GgmlType;
use glm_convert::{FileType, TypePolicy};

const GOLDEN: &str = include_str!("../../../tests/fixtures/quant-mix/mixes.txt");

struct Model {
    name: String,
    n_layer: u64,
    n_head: u64,
    n_head_kv: u64,
    tensors: Vec<(String, Vec<u64>)>,
}

#[test]
fn every_mix_is_llama_quantizes() {
    let mut models: Vec<Model> = Vec::new();
    let (mut cases, mut tensors_checked) = (0, 0);
    let mut failures = Vec::new();
    for line in GOLDEN.lines().filter(|l| !l.starts_with('#')) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "model" => models.push(Model {
                name: w[1].into(),
                n_layer: w[2].parse().unwrap(),
                n_head: w[3].parse().unwrap(),
                n_head_kv: w[4].parse().unwrap(),
                tensors: Vec::new(),
            }),
            "tensor" => {
                let (ne0, ne1): (u64, u64) = (w[2].parse().unwrap(), w[3].parse().unwrap());
                let dims = if ne1 == 1 { vec![ne0] } else { vec![ne0, ne1] };
                models.last_mut().unwrap().tensors.push((w[1].into(), dims));
            }
            "case" => {
                let m = models.last().unwrap();
                let (head, types) = line.split_once(" : ").unwrap();
                let head: Vec<&str> = head.split_whitespace().collect();
                let ftype = FileType::parse(head[1])
                    .unwrap_or_else(|| panic!("unknown file type {}", head[1]));
                let opts = &head[2..];
                let mut p = TypePolicy::of(ftype).for_model(m.n_layer, m.n_head, m.n_head_kv);
                p.pure = opts.contains(&"--pure");
                p.has_imatrix = opts.contains(&"--imatrix");
                if opts.contains(&"--output-tensor-type") {
                    p.output_type = GgmlType::from_name("q8_0");
                    p.token_embd_type = GgmlType::from_name("q5_K");
                }
                let want: Vec<&str> = types.split_whitespace().collect();
                assert_eq!(want.len(), m.tensors.len(), "{line}");
                for ((name, dims), want) in m.tensors.iter().zip(want) {
                    let got = p.tensor_type(name, dims);
                    if got.name() != want {
                        failures.push(format!(
                            "model {} {} {}: {name} is {got}, llama-quantize says {want}",
                            m.name,
                            ftype,
                            opts.join(" ")
                        ));
                    }
                    tensors_checked += 1;
                }
                cases += 1;
            }
            other => panic!("unexpected line kind {other:?}"),
        }
    }
    assert_eq!(
        cases, 152,
        "the golden file lists 2 models x 19 file types x 4 option sets"
    );
    assert!(
        failures.is_empty(),
        "{} of {tensors_checked} tensor types differ; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[test]
fn q2_k_s_without_an_imatrix_is_refused_where_llama_quantize_refuses() {
    // llama-quantize: "this quantization requires an imatrix!" for the q2_K layer tensors of a
    // Q2_K_S file (tensor_requires_imatrix), not for the embeddings and the head
    let p = TypePolicy::of(FileType::Q2_K_S).for_model(28, 32, 2);
    let t = p.tensor_type("blk.5.ffn_up.weight", &[4096, 27392]);
    assert_eq!(t, GgmlType::Q2K);
    assert!(p.requires_imatrix("blk.5.ffn_up.weight", t));
    assert!(!p.requires_imatrix("token_embd.weight", GgmlType::Q2K));
}
