//! The character corpus: vocabulary, encoding, splits and windows.

mod common;

use kiln_data::{CharCorpus, CharVocab, DataLoader, Dataset, RandomWindows, Rng, Windows};
use kiln_tensor::Array;

#[test]
fn vocabulary_is_the_sorted_distinct_characters() {
    let v = CharVocab::from_text("hello world, é€");
    let want: Vec<char> = vec![' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w', 'é', '€'];
    assert_eq!(v.chars(), &want[..]);
    assert_eq!(v.encode("hello").unwrap(), vec![4, 3, 5, 5, 6]);
    assert_eq!(v.encode("€é").unwrap(), vec![10, 9]);
    assert_eq!(v.decode(&[8, 6, 7, 5, 2]).unwrap(), "world");
    assert!(v.encode("hex").unwrap_err().to_string().contains("'x'"));
    assert!(v.decode(&[11]).unwrap_err().to_string().contains("token 11"));
    assert!(v.decode(&[-1]).is_err());
    assert_eq!(CharVocab::from_chars(vec!['b', 'a', 'b']).chars(), &['a', 'b']);
}

#[test]
fn split_truncates_like_python_int() {
    let c = CharCorpus::from_text("abcdefghijk"); // 11 chars: int(0.9 * 11) = 9
    let (train, val) = c.split(0.9).unwrap();
    assert_eq!((train.numel(), val.numel()), (9, 2));
    assert_eq!(c.vocab.decode(&val.to_vec::<i64>().unwrap()).unwrap(), "jk");
    assert_eq!(c.split(0.0).unwrap().0.numel(), 0);
    assert!(c.split(1.1).is_err());
}

#[test]
fn random_windows_are_shifted_pairs_inside_the_text() {
    let tokens = Array::from_vec((0..20i64).collect(), &[20]).unwrap();
    let w = RandomWindows::new(&tokens, 5, 100, 3).unwrap();
    let mut starts = std::collections::HashSet::new();
    for i in 0..100 {
        let (x, y) = w.get_seeded(i, 7).unwrap();
        let (x, y) = (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap());
        // Tokens are their own positions: x = s..s+5, y = x + 1, s in 0..15.
        let s = x[0];
        assert_eq!(x, (s..s + 5).collect::<Vec<_>>());
        assert_eq!(y, (s + 1..s + 6).collect::<Vec<_>>());
        assert!((0..15).contains(&s));
        starts.insert(s);
    }
    assert_eq!(starts.len(), 15, "every start occurs in 100 draws");
    assert_eq!(
        w.get_seeded(4, 7).unwrap().0.to_vec::<i64>().unwrap(),
        w.get_seeded(4, 7).unwrap().0.to_vec::<i64>().unwrap()
    );
    let (x, y) = w.sample_batch(8, &mut Rng::new(0)).unwrap();
    assert_eq!((x.shape(), y.shape()), (&[8, 5][..], &[8, 5][..]));
    let (xv, yv) = (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap());
    assert!(xv.iter().zip(&yv).all(|(a, b)| a + 1 == *b));
    assert!(RandomWindows::new(&tokens, 20, 1, 0).is_err());
    assert!(w.get(100).is_err());

    // Through a loader: [B, T] i64 pairs, fresh windows each epoch.
    let loader = DataLoader::new(w, 10).unwrap().seed(1).num_workers(2);
    let (bx, by) = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!((bx.shape(), by.dtype()), (&[10, 5][..], kiln_tensor::DType::I64));
    let e1 = loader.epoch(1).next().unwrap().unwrap().0.data().to_vec::<i64>().unwrap();
    assert_ne!(bx.data().to_vec::<i64>().unwrap(), e1);
}

#[test]
fn validation_windows_do_not_overlap() {
    let tokens = Array::from_vec((0..11i64).collect(), &[11]).unwrap();
    let w = Windows::new(&tokens, 5).unwrap();
    assert_eq!(w.len(), 2); // (11 - 1) / 5
    let (x, y) = w.get(1).unwrap();
    assert_eq!((x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap()), (vec![5, 6, 7, 8, 9], vec![6, 7, 8, 9, 10]));
    assert!(w.get(2).is_err());
    assert_eq!(Windows::new(&tokens, 3).unwrap().len(), 3);
    assert!(Windows::new(&tokens, 0).is_err());
}

#[test]
fn austen() {
    let Some(assets) = common::assets("austen") else { return };
    let c = CharCorpus::load(assets.join("text/austen-all.txt")).unwrap();
    // Python: len(text) = 4025028, len(sorted(set(text))) = 81, int(0.9 * n) = 3622525.
    assert_eq!((c.len(), c.vocab.len()), (4025028, 81));
    assert_eq!(c.vocab.chars()[..3], ['\n', ' ', '!']);
    assert_eq!(*c.vocab.chars().last().unwrap(), '£');
    assert_eq!(c.split(0.9).unwrap().0.numel(), 3622525);
    let head = c.tokens.narrow(0, 0, 21).unwrap().to_vec::<i64>().unwrap();
    assert_eq!(c.vocab.decode(&head).unwrap(), "SENSE AND SENSIBILITY");
}
