//! Several sequences in one step (the engine of `serve -np`): a token's logits are bit-for-bit
//! the same whether it is evaluated alone or beside other sequences' tokens, on glmtool's own
//! kernels (every weight type they take on the fixture) with flash attention; requests give the
//! same tokens alone and batched (greedy and seeded sampling), choices of one prompt share its
//! cache, and a request cancelled in the middle of its prompt frees its slot.

use gguf::GgmlType;
use glm_runtime::engine::{Client, Engine, Request};
use glm_runtime::generate::{generate, Generated, StopReason, TokenLogprob};
use glm_runtime::plan::PlanShape;
use glm_runtime::sampler::{Sampler, SamplerOptions};
use glm_runtime::{CacheType, Isa, LoadOptions, Model, SeqInput, Session, SessionOptions};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

mod common;
use common::{gguf, FIXTURE};

const N_CTX: usize = 160;

fn load(ty: GgmlType) -> Model {
    let shape = PlanShape {
        n_ctx: N_CTX,
        n_batch: 64,
        cache_type: CacheType::F16,
        logits_rows: 1,
        ..Default::default()
    };
    let opts = LoadOptions {
        cpu_kernels: Some(Isa::detect()),
        ..LoadOptions::cpu(shape)
    };
    Model::load_with(&gguf(ty), &opts).unwrap()
}

fn opts(n_seq: usize, n_batch: usize) -> SessionOptions {
    SessionOptions {
        n_ctx: N_CTX,
        n_batch,
        n_threads: 1, // tests run in parallel on 2 cores
        cache_type: CacheType::F16,
        n_seq,
        ..Default::default()
    }
}

fn text_tokens(m: &Model) -> Vec<u32> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    m.tokenizer.encode(&text).unwrap()
}

/// Logits of each prompt alone, then of `steps` single tokens after it.
fn alone(model: &Model, prompt: &[u32], next: &[u32]) -> Vec<Vec<f32>> {
    let mut s = Session::new(model, &opts(1, 64)).unwrap();
    let mut out = vec![s.eval(prompt, false).unwrap()];
    for &t in next {
        out.push(s.eval(&[t], false).unwrap());
    }
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn logits_are_bit_identical_alone_and_batched() {
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
    ];
    for ty in types {
        let model = load(ty);
        let all = text_tokens(&model);
        // three prompts of odd lengths, each followed by three decoded tokens
        let spans = [(0usize, 37usize), (40, 41 + 64), (110, 111)];
        let prompts: Vec<&[u32]> = spans.iter().map(|&(a, b)| &all[a..b]).collect();
        let nexts: Vec<&[u32]> = spans.iter().map(|&(_, b)| &all[b..b + 3]).collect();
        let want: Vec<Vec<Vec<f32>>> = prompts
            .iter()
            .zip(&nexts)
            .map(|(p, n)| alone(&model, p, n))
            .collect();
        let mut s = Session::new(&model, &opts(3, 64)).unwrap();
        assert!(s.batches_sequences(), "flash attention is on by default");
        // the prompts in one step (the long one in its own chunking), then the decode steps
        // together, and sequence 2 later on its own
        let got = s
            .eval_batch(&[
                SeqInput {
                    seq: 1,
                    tokens: &prompts[1][..30],
                    logits: false,
                },
                SeqInput {
                    seq: 0,
                    tokens: prompts[0],
                    logits: true,
                },
            ])
            .unwrap();
        assert!(same_bits(&got[0], &want[0][0]), "{ty}: prompt 0 batched");
        let got = s
            .eval_batch(&[
                SeqInput {
                    seq: 2,
                    tokens: prompts[2],
                    logits: true,
                },
                SeqInput {
                    seq: 0,
                    tokens: &nexts[0][..1],
                    logits: true,
                },
                SeqInput {
                    seq: 1,
                    tokens: &prompts[1][30..],
                    logits: true,
                },
            ])
            .unwrap();
        assert!(same_bits(&got[0], &want[2][0]), "{ty}: prompt 2 batched");
        assert!(
            same_bits(&got[1], &want[0][1]),
            "{ty}: token after prompt 0"
        );
        assert!(
            same_bits(&got[2], &want[1][0]),
            "{ty}: prompt 1 in two chunks"
        );
        for k in 0..2 {
            let inputs: Vec<SeqInput> = [(0, k + 1), (1, k), (2, k)]
                .iter()
                .map(|&(seq, i)| SeqInput {
                    seq,
                    tokens: &nexts[seq][i..i + 1],
                    logits: true,
                })
                .collect();
            let got = s.eval_batch(&inputs).unwrap();
            for (seq, i) in [(0usize, k + 2), (1, k + 1), (2, k + 1)] {
                let idx = seq;
                assert!(
                    same_bits(&got[idx], &want[seq][i]),
                    "{ty}: sequence {seq}, decode step {i}"
                );
            }
        }
        assert_eq!(s.seq_tokens(2).len(), prompts[2].len() + 2);
    }
}

/// A client that records what it is told.
#[derive(Default)]
struct Record {
    ids: Vec<u32>,
    result: Option<Result<Generated, String>>,
    progress: Vec<usize>,
}

struct Rec {
    sampler: Sampler,
    log: Rc<RefCell<Record>>,
    /// Cancel after this many prompt tokens are read.
    cancel_at: Option<usize>,
}

impl Client for Rec {
    fn sampler(&mut self) -> &mut Sampler {
        &mut self.sampler
    }
    fn token(&mut self, id: u32, _lp: Option<&TokenLogprob>) -> bool {
        self.log.borrow_mut().ids.push(id);
        true
    }
    fn progress(&mut self, done: usize, _total: usize) -> bool {
        self.log.borrow_mut().progress.push(done);
        self.cancel_at.is_none_or(|c| done < c)
    }
    fn finish(&mut self, result: Result<Generated, glm_runtime::RuntimeError>) {
        self.log.borrow_mut().result = Some(result.map_err(|e| e.to_string()));
    }
}

fn sampler(seed: Option<u64>) -> Sampler {
    Sampler::new(match seed {
        None => SamplerOptions {
            temperature: 0.0,
            ..Default::default()
        },
        Some(seed) => SamplerOptions {
            temperature: 0.9,
            top_p: 0.95,
            seed,
            ..Default::default()
        },
    })
}

fn client(seed: Option<u64>, cancel_at: Option<usize>) -> (Box<Rec>, Rc<RefCell<Record>>) {
    let log = Rc::new(RefCell::new(Record::default()));
    let c = Rec {
        sampler: sampler(seed),
        log: log.clone(),
        cancel_at,
    };
    (Box::new(c), log)
}

#[test]
fn requests_give_the_same_tokens_alone_and_batched() {
    let model = load(GgmlType::Q8_0);
    let all = text_tokens(&model);
    let reqs: Vec<(Vec<u32>, usize, Option<u64>)> = vec![
        (all[..20].to_vec(), 12, None),
        (all[30..100].to_vec(), 9, Some(7)),
        (all[5..9].to_vec(), 15, None),
        (all[50..52].to_vec(), 6, Some(11)),
        (all[20..90].to_vec(), 0, None),
    ];
    let alone: Vec<Vec<u32>> = reqs
        .iter()
        .map(|(p, n, seed)| {
            let mut s = Session::new(&model, &opts(1, 16)).unwrap();
            let mut smp = sampler(*seed);
            generate(&mut s, p, *n, &mut smp, &[], |_| true)
                .unwrap()
                .ids
        })
        .collect();
    // 3 slots for 5 requests: they join as slots free up, prompts read 16 tokens a step
    let mut session = Session::new(&model, &opts(3, 16)).unwrap();
    let mut engine = Engine::new(&mut session, 16);
    let mut logs = Vec::new();
    let mut waiting: Vec<usize> = (0..reqs.len()).collect();
    let mut steps = 0;
    while !waiting.is_empty() || !engine.is_idle() {
        while let Some(&r) = waiting.first() {
            let (p, n, seed) = &reqs[r];
            let Some(slot) = engine.pick_slot(p) else {
                break;
            };
            let (c, log) = client(*seed, None);
            let req = Request {
                prompt: p.clone(),
                max_new: *n,
                stop_ids: vec![],
                top_logprobs: None,
            };
            engine.start(slot, req, c).unwrap();
            logs.push((r, log));
            waiting.remove(0);
        }
        engine.step();
        steps += 1;
        assert!(steps < 1000);
    }
    for (r, log) in logs {
        let log = log.borrow();
        let g = log.result.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(g.ids, alone[r], "request {r}");
        assert_eq!(log.ids, alone[r], "request {r}: streamed tokens");
        assert_eq!(g.stop, StopReason::Length);
        assert_eq!(g.stats.prompt_tokens, reqs[r].0.len());
    }
}

#[test]
fn choices_share_the_prompt_and_cancelled_prompts_free_their_slot() {
    let model = load(GgmlType::Q4_0);
    let all = text_tokens(&model);
    let prompt = all[..50].to_vec();
    let want = {
        let mut s = Session::new(&model, &opts(1, 64)).unwrap();
        let mut smp = sampler(None);
        generate(&mut s, &prompt, 8, &mut smp, &[], |_| true)
            .unwrap()
            .ids
    };
    let mut session = Session::new(&model, &opts(3, 16)).unwrap();
    let mut engine = Engine::new(&mut session, 16);
    let req = || Request {
        prompt: prompt.clone(),
        max_new: 8,
        stop_ids: vec![],
        top_logprobs: None,
    };
    let (c0, l0) = client(None, None);
    let (c1, l1) = client(None, None);
    let (c2, l2) = client(None, Some(20));
    engine.start(0, req(), c0).unwrap();
    engine.start(1, req(), c1).unwrap(); // the same prompt: it copies slot 0's cache
                                         // another request, cancelled by its client once 20 of its 40 prompt tokens are read
    let other = Request {
        prompt: all[60..100].to_vec(),
        ..req()
    };
    engine.start(2, other, c2).unwrap();
    engine.run_to_end();
    for l in [&l0, &l1] {
        let g = l
            .borrow()
            .result
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .ids
            .clone();
        assert_eq!(g, want);
    }
    let shared = l1.borrow();
    let stats = &shared.result.as_ref().unwrap().as_ref().unwrap().stats;
    assert_eq!(
        stats.prompt_evaluated, 1,
        "the second choice reads one token itself"
    );
    let cancelled = l2.borrow();
    let g = cancelled.result.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(g.stop, StopReason::Cancelled);
    assert!(g.ids.is_empty());
    let read = *cancelled.progress.last().unwrap();
    assert!((20..40).contains(&read), "{:?}", cancelled.progress);
    assert_eq!(
        engine.session().seq_tokens(2).len(),
        read,
        "what was read stays cached"
    );
    assert!(engine.is_idle());
}
