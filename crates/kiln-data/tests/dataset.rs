//! Dataset combinators and the in-memory datasets, checked against hand-built expectations.

use kiln_data::{ArrayDataset, Dataset, Digits, Labeled, PairDataset, Rng};
use kiln_tensor::Array;
use std::collections::HashSet;

/// Ten samples: features `[i, 10 i]`, label `i % 3`.
fn toy() -> ArrayDataset {
    let x: Vec<f32> = (0..10).flat_map(|i| [i as f32, 10.0 * i as f32]).collect();
    ArrayDataset::from_labels(Array::from_vec(x, &[10, 2]).unwrap(), (0..10).map(|i| i % 3).collect()).unwrap()
}

#[test]
fn array_dataset_items_are_rows_and_labels() {
    let ds = toy();
    assert_eq!(ds.len(), 10);
    let (x, y) = ds.get(4).unwrap();
    assert_eq!(x.shape(), &[2]);
    assert_eq!(x.to_vec_f32().unwrap(), vec![4.0, 40.0]);
    assert_eq!(y, 1);
    assert!(x.shares_storage(ds.features()), "items are views");
    let e = ds.get(10).unwrap_err().to_string();
    assert!(e.contains("index 10") && e.contains("10 samples"), "{e}");
    assert!(ArrayDataset::from_labels(Array::zeros(&[3, 2]), vec![0, 1]).is_err());
    let bad = Array::from_vec(vec![0.0f32, 1.0], &[2]).unwrap();
    assert!(ArrayDataset::new(Array::zeros(&[2, 2]), &bad).unwrap_err().to_string().contains("i64"));
}

#[test]
fn an_array_is_a_dataset_of_its_rows_and_pairs_pair_rows() {
    let a = Array::from_vec((0..6).map(|v| v as f32).collect(), &[3, 2]).unwrap();
    assert_eq!(Dataset::len(&a), 3);
    assert_eq!(a.get(2).unwrap().to_vec_f32().unwrap(), vec![4.0, 5.0]);
    assert!(a.get(3).is_err());
    let t = Array::from_vec(vec![7i64, 8, 9], &[3]).unwrap();
    let p = PairDataset::new(a.clone(), t).unwrap();
    let (x, y) = p.get(1).unwrap();
    assert_eq!((x.to_vec_f32().unwrap(), y.to_vec::<i64>().unwrap()), (vec![2.0, 3.0], vec![8]));
    assert!(PairDataset::new(a, Array::zeros(&[4])).is_err());
}

#[test]
fn map_subset_and_filters() {
    let ds = toy().map(|(x, y)| Ok((x.mul_scalar(2.0)?, y + 100)));
    let (x, y) = ds.get(3).unwrap();
    assert_eq!((x.to_vec_f32().unwrap(), y), (vec![6.0, 60.0], 100));

    let sub = toy().subset(vec![9, 2, 2]).unwrap();
    assert_eq!(sub.len(), 3);
    assert_eq!(sub.get(0).unwrap().1, 0); // 9 % 3
    assert_eq!(sub.get(1).unwrap().0.to_vec_f32().unwrap(), vec![2.0, 20.0]);
    assert!(sub.get(3).is_err());
    assert!(toy().subset(vec![10]).unwrap_err().to_string().contains("index 10"));

    let by_label = toy().filter_labels(|l| l == 2).unwrap();
    assert_eq!(by_label.indices(), &[2, 5, 8]);
    assert_eq!(by_label.labels().unwrap(), vec![2, 2, 2]);
    let by_item = toy().filter(|(x, _)| x.to_vec_f32().unwrap()[0] >= 7.0).unwrap();
    assert_eq!(by_item.indices(), &[7, 8, 9]);
    // A subset of a subset is labelled too.
    let nested = by_label.subset(vec![2, 0]).unwrap();
    assert_eq!(nested.get(0).unwrap().0.to_vec_f32().unwrap(), vec![8.0, 80.0]);
}

#[test]
fn random_split_is_a_seeded_partition() {
    let parts = toy().random_split(&[6, 3, 1], 42).unwrap();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![6, 3, 1]);
    let all: Vec<usize> = parts.iter().flat_map(|p| p.indices().to_vec()).collect();
    assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), 10, "disjoint and covering: {all:?}");
    // The same seed gives the same split; another seed (almost surely) another.
    let again = toy().random_split(&[6, 3, 1], 42).unwrap();
    assert_eq!(parts[0].indices(), again[0].indices());
    let other = toy().random_split(&[6, 3, 1], 43).unwrap();
    assert_ne!(
        parts.iter().map(|p| p.indices().to_vec()).collect::<Vec<_>>(),
        other.iter().map(|p| p.indices().to_vec()).collect::<Vec<_>>()
    );
    assert!(toy().random_split(&[5, 4], 0).unwrap_err().to_string().contains("sum to 9"));

    let (train, val) = toy().train_val_split(0.25, 7).unwrap();
    assert_eq!((train.len(), val.len()), (7, 3)); // round(2.5) = 3
    let mut both: Vec<usize> = train.indices().iter().chain(val.indices()).copied().collect();
    both.sort_unstable();
    assert_eq!(both, (0..10).collect::<Vec<_>>());
    assert!(toy().train_val_split(1.5, 0).is_err());
}

#[test]
fn map_random_is_reproducible_per_seed_and_differs_across_seeds() {
    let ds = toy().map_random(|(x, y), rng: &mut Rng| Ok((x, y, rng.next_u64())));
    let a = ds.get_seeded(3, 11).unwrap().2;
    assert_eq!(a, ds.get_seeded(3, 11).unwrap().2);
    assert_ne!(a, ds.get_seeded(3, 12).unwrap().2);
    assert_ne!(a, ds.get_seeded(4, 11).unwrap().2);
    assert_eq!(ds.get(3).unwrap().2, ds.get_seeded(3, 0).unwrap().2);
}

#[test]
fn digits_split_into_0_to_4_and_5_to_9() {
    // sklearn's class counts: 178 182 177 183 181 | 182 181 179 174 180.
    let digits = Digits::embedded().unwrap();
    assert_eq!(digits.len(), 1797);
    let low = digits.clone().filter_labels(|l| l < 5).unwrap();
    let high = digits.clone().filter_labels(|l| l >= 5).unwrap();
    assert_eq!((low.len(), high.len()), (901, 896));
    assert!(high.labels().unwrap().iter().all(|&l| (5..10).contains(&l)));
    // The first row of digits.csv: 0,0,5,13,9,1,0,0,... label 0.
    let (x, y) = digits.get(0).unwrap();
    assert_eq!((x.shape(), y), (&[64][..], 0));
    assert_eq!(&x.to_vec_f32().unwrap()[..6], &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0]);
    let scaled = digits.to_dataset().unwrap();
    let (x, _) = scaled.get(0).unwrap();
    assert_eq!(x.shape(), &[1, 8, 8]);
    assert_eq!(x.to_vec_f32().unwrap()[3], 13.0 / 16.0);
}
