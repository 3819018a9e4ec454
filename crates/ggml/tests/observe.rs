//! The observe op (observe.rs): it passes its input on unchanged, and adds Σ x² per column and
//! the row count to the caller's sums, across graphs, in f32 and in row order.

use glm_ggml::{Backend, GgmlError, Scheduler, SquareSums, TensorSpec, TensorStore, TYPE_F32};

mod common;
use common::rand;

const K: usize = 7;
const T: usize = 5;
const ROWS: usize = 3;

/// Runs `W · f(x)` once, where f(x) = x + x, observing x and f(x); returns the product.
fn run_once(
    sched: &mut Scheduler,
    store: &TensorStore,
    observe: Option<(&SquareSums, &SquareSums)>,
) -> Vec<f32> {
    let (x, w) = (store.at(0).unwrap(), store.at(1).unwrap());
    sched
        .with_graph(|g| -> Result<Vec<f32>, GgmlError> {
            let h = match observe {
                Some((a, b)) => {
                    let x = g.observe_squares(x, a)?;
                    g.observe_squares(g.add(x, x)?, b)?
                }
                None => g.add(x, x)?,
            };
            let y = g.mul_mat(w, h)?;
            g.output(y)?;
            g.allocate()?;
            g.compute()?;
            g.read_f32(y)
        })
        .unwrap()
}

#[test]
fn observing_sums_squares_and_changes_nothing() {
    let cpu = Backend::cpu(1).unwrap();
    let specs = [
        TensorSpec {
            name: "x".into(),
            ty: TYPE_F32,
            ne: vec![K as i64, T as i64],
        },
        TensorSpec {
            name: "w".into(),
            ty: TYPE_F32,
            ne: vec![K as i64, ROWS as i64],
        },
    ];
    let store = TensorStore::allocate_weights(&cpu, &specs).unwrap();
    let x = rand(K * T, 3, 2.0);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    store.upload(store.at(0).unwrap(), &bytes(&x)).unwrap();
    store
        .upload(store.at(1).unwrap(), &bytes(&rand(K * ROWS, 4, 1.0)))
        .unwrap();
    let mut sched = Scheduler::new(None, &cpu, 64).unwrap();

    let plain = run_once(&mut sched, &store, None);
    let (mut a, mut b) = (SquareSums::new(K), SquareSums::new(K));
    for _ in 0..2 {
        let y = run_once(&mut sched, &store, Some((&a, &b)));
        assert_eq!(y, plain, "observing changed the product");
    }
    // two graphs: every row twice, added in order in f32 (as llama-imatrix: acc += x·x)
    let squares = |scale: f32| {
        let mut w = [0f32; K];
        for _ in 0..2 {
            for r in 0..T {
                for (j, acc) in w.iter_mut().enumerate() {
                    let v = x[r * K + j] * scale;
                    *acc += v * v;
                }
            }
        }
        w
    };
    let (sums, rows) = a.read();
    assert_eq!(rows, 2 * T as u64);
    assert_eq!(sums, &squares(1.0)[..]);
    let (sums, rows) = b.read();
    assert_eq!(rows, 2 * T as u64);
    assert_eq!(sums, &squares(2.0)[..]); // x + x = 2x, exactly
    a.reset();
    assert_eq!(a.read(), (&[0f32; K][..], 0));

    // sums of another width: an error, not a crash
    let wrong = SquareSums::new(K + 1);
    let e = sched
        .with_graph(|g| -> Result<(), GgmlError> {
            g.observe_squares(store.at(0).unwrap(), &wrong)?;
            Ok(())
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("observe_squares"), "{e}");
}
