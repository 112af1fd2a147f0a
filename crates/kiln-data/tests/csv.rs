//! The CSV reader on hand-written tables and on scikit-learn's bundled CSVs.

mod common;

use kiln_data::{parse_csv, read_csv, CsvOptions, Dataset, Header, LabelColumn};

const TABLE: &str = "a, b ,species,c\n1,2.5,cat,-3\n\n4,5e-1,dog,6\r\n7,8,cat,9\n";

#[test]
fn reads_features_and_a_label_column_by_name_or_index() {
    let t = parse_csv(TABLE, "t.csv", &CsvOptions::label_name("species")).unwrap();
    assert_eq!(t.features.shape(), &[3, 3]);
    assert_eq!(t.features.to_vec_f32().unwrap(), vec![1.0, 2.5, -3.0, 4.0, 0.5, 6.0, 7.0, 8.0, 9.0]);
    assert_eq!(t.feature_names, vec!["a", "b", "c"]);
    // Non-integer labels become indices into the sorted class names.
    assert_eq!(t.classes, vec!["cat", "dog"]);
    assert_eq!(t.labels, Some(vec![0, 1, 0]));
    let by_index = parse_csv(TABLE, "t.csv", &CsvOptions::label_index(-2)).unwrap();
    assert_eq!(by_index.labels, t.labels);
    // Integer labels are kept as they are.
    let numeric = TABLE.replace("cat", "0.5").replace("dog", "1");
    let t = parse_csv(&numeric, "t.csv", &CsvOptions::label_index(3)).unwrap();
    assert_eq!((t.labels.clone(), t.classes.len()), (Some(vec![-3, 6, 9]), 0));
    assert_eq!(t.features.to_vec_f32().unwrap()[2], 0.5);
    let ds = t.into_dataset().unwrap();
    assert_eq!(ds.get(1).unwrap().1, 6);
}

#[test]
fn no_header_quotes_and_other_delimiters() {
    let opts = CsvOptions { delimiter: ';', header: Header::None, label: Some(LabelColumn::Index(0)) };
    let t = parse_csv("2;\"1.5\";3\n1;4;\" 5 \"\n", "q.csv", &opts).unwrap();
    assert_eq!(t.labels, Some(vec![2, 1]));
    assert_eq!(t.features.to_vec_f32().unwrap(), vec![1.5, 3.0, 4.0, 5.0]);
    assert_eq!(t.feature_names, vec!["1", "2"]);
    let t = parse_csv("\u{feff}\"x,y\",z\n1,2\n", "q.csv", &CsvOptions::default()).unwrap();
    assert_eq!(t.feature_names, vec!["x,y", "z"]);
    assert!(t.labels.is_none() && t.into_dataset().is_err());
}

fn error(text: &str, opts: &CsvOptions, want: &str) {
    let e = parse_csv(text, "bad.csv", opts).unwrap_err().to_string();
    assert!(e.starts_with("bad.csv: ") && e.contains(want), "{e:?} lacks {want:?}");
}

#[test]
fn malformed_tables_name_the_line_and_column() {
    let opts = CsvOptions::label_name("species");
    error("", &opts, "empty file");
    error("a,b\n1,2\n", &opts, "no column named \"species\"");
    error(TABLE.replace("4,5e-1", "4,x").as_str(), &opts, "line 4: column \"b\": \"x\" is not a number");
    error("a,species\n1,2,3\n", &opts, "line 2: expected 2 fields, found 3");
    error("a,species\n\"1,2\n", &opts, "line 2: unterminated quoted field");
    error("a,b\n1,2\n", &CsvOptions::label_index(2), "label column 2 is out of range for 2 columns");
    error("3,1,x,y\n1,0\n", &CsvOptions::sklearn(), "declares 3 rows, found 1");
    error("1,1,x,y\n1,5\n", &CsvOptions::sklearn(), "label 5 is not a class index");
    error("one,1,x\n1,0\n", &CsvOptions::sklearn(), "n_samples");
}

#[test]
fn sklearn_tabular_files() {
    let Some(assets) = common::assets("sklearn_tabular_files") else { return };
    // Reference values from Python's csv module on the same files.
    let iris = read_csv(assets.join("tabular/iris.csv"), &CsvOptions::sklearn()).unwrap();
    assert_eq!(iris.features.shape(), &[150, 4]);
    assert_eq!(iris.classes, vec!["setosa", "versicolor", "virginica"]);
    assert_eq!(&iris.features.to_vec_f32().unwrap()[..4], &[5.1, 3.5, 1.4, 0.2]);
    let labels = iris.labels.clone().unwrap();
    assert_eq!((0..3).map(|c| labels.iter().filter(|&&l| l == c).count()).collect::<Vec<_>>(), vec![50, 50, 50]);
    let sepal: f64 = iris.features.to_vec_f32().unwrap().iter().step_by(4).map(|&v| v as f64).sum();
    assert!((sepal - 876.5).abs() < 1e-3, "{sepal}");
    assert_eq!(iris.into_dataset().unwrap().len(), 150);

    let wine = read_csv(assets.join("tabular/wine_data.csv"), &CsvOptions::sklearn()).unwrap();
    assert_eq!(wine.features.shape(), &[178, 13]);
    let labels = wine.labels.unwrap();
    assert_eq!((0..3).map(|c| labels.iter().filter(|&&l| l == c).count()).collect::<Vec<_>>(), vec![59, 71, 48]);

    let bc = read_csv(assets.join("tabular/breast_cancer.csv"), &CsvOptions::sklearn()).unwrap();
    assert_eq!((bc.features.shape(), bc.classes.clone()), (&[569, 30][..], vec!["malignant".into(), "benign".into()]));
    assert_eq!(bc.labels.unwrap().iter().filter(|&&l| l == 1).count(), 357);

    let e = read_csv(assets.join("tabular/missing.csv"), &CsvOptions::sklearn()).unwrap_err().to_string();
    assert!(e.contains("missing.csv"), "{e}");
}
