//! Reading `torch.save` archives: dtypes, views, shared storages, wrappers, bad files.

use std::path::PathBuf;

use patchtcga_model::read_tensors;
use tch::Kind;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn every_tensor_of_a_torch_save_file_is_read_exactly() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("assorted.json")).unwrap()).unwrap();
    let tensors = read_tensors(&fixture("assorted.pth")).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = expected.as_object().unwrap().keys().map(String::as_str).collect();
    let (mut a, mut b) = (names.clone(), want.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for (name, t) in &tensors {
        let e = &expected[name];
        let shape: Vec<i64> = e["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(t.size(), shape, "{name}");
        let values: Vec<f64> = e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let ours: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap();
        assert_eq!(ours, values, "{name}");
    }
    let kinds: Vec<(String, Kind)> = tensors.iter().map(|(n, t)| (n.clone(), t.kind())).collect();
    for (name, kind) in
        [("f16", Kind::Half), ("bf16", Kind::BFloat16), ("i64", Kind::Int64), ("u8", Kind::Uint8), ("bool", Kind::Bool)]
    {
        assert!(kinds.contains(&(name.to_owned(), kind)), "{name} should be {kind:?}");
    }
}

#[test]
fn bad_files_fail_with_the_file_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("notes.pth", b"hello world, not a checkpoint".to_vec(), "neither a PyTorch zip checkpoint"),
        ("legacy.pth", vec![0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c], "legacy"),
        ("cut.pth", std::fs::read(fixture("tiny_vit.pth")).unwrap()[..40_000].to_vec(), "cut.pth"),
    ];
    for (name, bytes, cause) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = read_tensors(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(cause), "{e}");
    }
    let e = read_tensors(&dir.path().join("absent.pth")).unwrap_err().to_string();
    assert!(e.contains("absent.pth"), "{e}");
}
