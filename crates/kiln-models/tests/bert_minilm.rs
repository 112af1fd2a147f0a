//! all-MiniLM-L6-v2 against the PyTorch reference outputs (shared/assets/minilm, see
//! shared/assets/REFERENCES.md): tokenization, `last_hidden_state` and the sentence
//! embedding. The assets are found in `KILN_ASSETS_DIR`, else in the first `shared/assets`
//! beside the crate or one of its ancestors (`<repo>/../shared/assets` for a checkout next to
//! `shared/`); without them the test prints a note and passes.

use kiln_autograd::{Array, DType};
use kiln_models::{Padding, SentenceEmbedder};
use std::path::PathBuf;

fn assets_dir() -> PathBuf {
    match std::env::var_os("KILN_ASSETS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let found = crate_dir.ancestors().map(|a| a.join("shared/assets")).find(|d| d.is_dir());
            found.unwrap_or_else(|| crate_dir.join("../../../shared/assets"))
        }
    }
}

fn max_abs(a: &Array, b: &Array) -> f32 {
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn minilm_matches_the_pytorch_reference() {
    let dir = assets_dir().join("minilm");
    if !dir.join("model.safetensors").is_file() || !dir.join("reference.safetensors").is_file() {
        println!("note: MiniLM assets not found under {} (set KILN_ASSETS_DIR); skipping", dir.display());
        return;
    }
    let reference = kiln_io::load_safetensors(dir.join("reference.safetensors")).unwrap();
    let text = std::fs::read_to_string(dir.join("reference_sentences.txt")).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let ref_ids = &reference["input_ids"];
    assert_eq!(ref_ids.shape()[0], all.len());
    let pad_len = ref_ids.shape()[1];
    // Every sentence (set KILN_MINILM_SENTENCES=i,j,.. to check fewer).
    let picked: Vec<usize> = match std::env::var("KILN_MINILM_SENTENCES") {
        Ok(list) => list.split(',').map(|i| i.trim().parse().expect("sentence index")).collect(),
        Err(_) => (0..all.len()).collect(),
    };
    let sentences: Vec<&str> = picked.iter().map(|&i| all[i]).collect();
    let pick = |name: &str| -> Array {
        let a = &reference[name];
        let parts: Vec<Array> = picked.iter().map(|&i| a.narrow(0, i, 1).unwrap()).collect();
        let refs: Vec<&Array> = parts.iter().collect();
        Array::cat(&refs, 0).unwrap()
    };

    let embedder = SentenceEmbedder::from_pretrained(&dir)
        .unwrap()
        .with_max_seq_length(pad_len)
        .unwrap()
        .with_padding(Padding::Fixed(pad_len))
        .unwrap();
    assert!(embedder.normalize, "modules.json lists a Normalize module");
    let out = embedder.encode(&sentences).unwrap();

    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        let mine = match name {
            "input_ids" => &out.encoding.input_ids,
            "attention_mask" => &out.encoding.attention_mask,
            _ => &out.encoding.token_type_ids,
        };
        let want = pick(name);
        assert_eq!(want.dtype(), DType::I64);
        assert_eq!(mine.data().to_vec::<i64>().unwrap(), want.to_vec::<i64>().unwrap(), "{name}");
    }
    let lhs = max_abs(&out.last_hidden_state.data(), &pick("last_hidden_state"));
    let emb = max_abs(&out.sentence_embedding.data(), &pick("sentence_embedding"));
    println!("max abs error: last_hidden_state {lhs:.3e}, sentence_embedding {emb:.3e}");
    assert!(lhs <= 1e-4, "last_hidden_state max abs error {lhs}");
    assert!(emb <= 1e-5, "sentence_embedding max abs error {emb}");
    // Padding to the longest instead of a fixed length changes nothing on the real tokens.
    let longest = SentenceEmbedder::from_pretrained(&dir)
        .unwrap()
        .with_max_seq_length(pad_len)
        .unwrap()
        .with_padding(Padding::Longest)
        .unwrap();
    let short = longest.embed(&sentences).unwrap();
    assert!(max_abs(&short.data(), &out.sentence_embedding.data()) <= 1e-5);
}
