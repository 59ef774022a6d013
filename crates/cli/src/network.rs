//! The commands `patchtcga` hands to `patchtcga-nn` (the binary that links LibTorch), named once
//! with the line each shows in help, for both binaries.

use clap::{Arg, Command};

/// Top-level network commands and their help lines.
pub const COMMANDS: [(&str, &str); 9] = [
    ("pretrain", "Train a backbone as a run config says (supervised organ classification, SimCLR, BYOL, MoCo v2, DINO, MAE)"),
    (
        "finetune",
        "Fine-tune on a benchmark (PCam200): full or linear probe, best validation epoch, test report with accuracy \
         interval, balanced accuracy, ROC-AUC, F1 and confusion matrix",
    ),
    (
        "probe",
        "Logistic-regression probe and k-NN classifier on embedded splits (from `embed`): a checkpoint compared in \
         seconds; or (`--slides`) the k-fold linear probe on slide embeddings (from `embed-slides`)",
    ),
    (
        "infer",
        "Slide a fine-tuned classifier over a whole slide's tissue: a probability heat map over the thumbnail, and the \
         raw map; or (`--mil RUN`) a slide-level run's prediction and attention",
    ),
    (
        "embed",
        "Backbone features of a folder of patches (.npy), or of slides' tissue grids (one .h5 per slide, CLAM / TRIDENT \
         layout), from any backbone and PyTorch weights",
    ),
    (
        "embed-slides",
        "One embedding per slide from its patch features (.h5 of `embed --slides`, CLAM or TRIDENT) by a slide \
         encoder (FEATHER, mean pooling), its input contract checked",
    ),
    (
        "segment-tissue",
        "A learned tissue segmenter (HEST's) over each slide of a list: its tissue for QuPath (.geojson) and the list \
         with it as each slide's `roi` for build and embed",
    ),
    ("export", "Write a backbone's weights for PyTorch (.pth or .safetensors, torchvision / timm names)"),
    (
        "mil",
        "Slide-level multiple-instance learning on patch features: `mil train` (ABMIL, CLAM-SB or TransMIL, k-fold \
         cross-validation by case), `mil heatmap` (a slide's attention)",
    ),
];

/// `bench` subcommands that run on `patchtcga-nn`, and their help lines.
pub const BENCHES: [(&str, &str); 3] = [
    ("loader", "Decode + augment + batch images of a dataset with a view recipe; prints images/s"),
    ("step", "Time training steps (forward, backward, update) on synthetic images; prints images/s"),
    ("pretrain", "Time a pretraining method's update on synthetic views of its recipe; prints images/s"),
];

/// `command` with the network commands added as stand-ins that take any arguments (for
/// `patchtcga`, which hands them on).
pub fn with_stand_ins(command: Command) -> Command {
    let stand_in = |(name, about): (&'static str, &'static str)| {
        Command::new(name)
            .about(about)
            .disable_help_flag(true)
            .arg(Arg::new("args").num_args(0..).trailing_var_arg(true).allow_hyphen_values(true))
    };
    command
        .subcommands(COMMANDS.map(stand_in))
        .mut_subcommand("bench", |bench| bench.subcommands(BENCHES.map(stand_in)))
}

/// `command` (`patchtcga-nn`'s own) with the help lines of its commands set from the tables.
pub fn with_help_lines(command: Command) -> Command {
    let command = COMMANDS.iter().fold(command, |c, &(name, about)| c.mut_subcommand(name, |s| s.about(about)));
    command.mut_subcommand("bench", |bench| {
        BENCHES.iter().fold(bench, |b, &(name, about)| b.mut_subcommand(name, |s| s.about(about)))
    })
}

/// Whether `patchtcga-nn` serves the command `matches` chose.
pub fn is_network(matches: &clap::ArgMatches) -> bool {
    match matches.subcommand() {
        Some(("bench", bench)) => bench.subcommand_name().is_some_and(|n| BENCHES.iter().any(|&(b, _)| b == n)),
        Some((name, _)) => COMMANDS.iter().any(|&(c, _)| c == name),
        None => false,
    }
}
