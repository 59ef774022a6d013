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

/// A torchvision-layout DeepLabv3 checkpoint (`backbone.*`, `classifier.*` for 21 classes,
/// `aux_classifier.*`, BN counters) into a 6-class network: the backbone loads by `load`, the
/// head by `load_head` — all of it but the class layer, which stays new.
#[test]
fn a_coco_deeplabv3_checkpoint_gives_backbone_and_head_but_the_class_layer() {
    use patchtcga_model::{load, load_head, Arch, ImportOptions, SegHead, SegNet};
    use tch::{nn, Tensor};
    let source = nn::VarStore::new(tch::Device::Cpu);
    let _a = SegNet::new(&source.root(), Arch::ResNet50.spec(64), SegHead::DeepLabV3, 21).unwrap();
    let mut tensors: Vec<(String, Tensor)> = source
        .variables()
        .into_iter()
        .map(|(n, t)| (if n.starts_with("classifier.") { n } else { format!("backbone.{n}") }, t))
        .collect();
    tensors.push(("classifier.1.num_batches_tracked".into(), Tensor::from(7i64)));
    tensors.push(("aux_classifier.4.weight".into(), Tensor::zeros([21, 256, 1, 1], (Kind::Float, tch::Device::Cpu))));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deeplabv3_resnet50_coco.pth");
    patchtcga_model::write_pth(&path, &tensors).unwrap();

    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _b = SegNet::new(&vs.root(), Arch::ResNet50.spec(64), SegHead::DeepLabV3, 6).unwrap();
    let backbone = load(&vs, &path, "classifier", &ImportOptions::default()).unwrap();
    assert_eq!(backbone.prefix, "backbone.");
    let head = load_head(&vs, &path).unwrap();
    assert_eq!(head.left, ["classifier.4.bias", "classifier.4.weight"].map(String::from).to_vec());
    let wanted = source.variables();
    for (name, t) in vs.variables() {
        let same = t.equal(&wanted[&name]);
        assert_eq!(same, !name.starts_with("classifier.4."), "{name}");
        assert_eq!(head.loaded.contains(&name), name.starts_with("classifier.") && same, "{name}");
    }
    // A backbone checkpoint has no head: nothing loads.
    let plain = dir.path().join("resnet50.pth");
    let only_backbone: Vec<(String, Tensor)> =
        tensors.into_iter().filter(|(n, _)| n.starts_with("backbone.")).collect();
    patchtcga_model::write_pth(&plain, &only_backbone).unwrap();
    assert_eq!(load_head(&vs, &plain).unwrap(), Default::default());
}
