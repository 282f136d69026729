//! Every validation error's exact text (a snapshot): the message, `file:line:col`, the offending line
//! and carets under the offending text. Each bad file exits with code 2, runs nothing and creates no
//! cache.

mod common;

use common::Project;

/// Writes `file`, runs `wspace run file EXTRA`, asserts exit code 2, no cache, and returns stderr.
fn rejected(text: &str, extra: &[&str]) -> String {
    let p = Project::new();
    p.write("p.toml", text);
    let mut args = vec!["run", "p.toml"];
    args.extend_from_slice(extra);
    let out = p.wspace(&args);
    assert_eq!(out.status.code(), Some(2), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "nothing ran, nothing printed on stdout");
    assert!(!p.path("cache").exists(), "the cache was not touched");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn toml_syntax() {
    assert_eq!(
        rejected("[stages.a]\nkind = \"command\"\nrun = \"true\"\ninputs = { x = \"b\" \n", &[]),
        r#"error: invalid TOML: unclosed inline table, expected `}`
 --> p.toml:4:19
  |
4 | inputs = { x = "b" 
  |                   ^
"#
    );
}

#[test]
fn unknown_kind() {
    assert_eq!(
        rejected("[stages.a]\nkind = \"comand\"\n", &[]),
        format!(
            r#"error: unknown kind `comand` for stage `a`
 --> p.toml:2:8
  |
2 | kind = "comand"
  |        ^^^^^^^^
  = help: known kinds: {}
"#,
            known_kinds()
        )
    );
}

/// The registry grows as stage kinds are added; the snapshot takes the list from `wspace kinds`.
fn known_kinds() -> String {
    let p = Project::new();
    let out = p.wspace(&["kinds"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> =
        text.lines().filter(|l| !l.starts_with(' ') && !l.is_empty()).filter_map(|l| l.split(' ').next()).collect();
    assert!(names.contains(&"command") && names.contains(&"zoo"), "{names:?}");
    names.join(", ")
}

#[test]
fn unknown_parameter() {
    assert_eq!(
        rejected("[stages.a]\nkind = \"command\"\nrun = \"true\"\nrn = 3\n", &[]),
        r#"error: unknown parameter `rn` for stage `a` (kind `command`)
 --> p.toml:4:1
  |
4 | rn = 3
  | ^^
  = help: known parameters: run, outputs, deps, params
"#
    );
}

#[test]
fn ill_typed_parameter() {
    assert_eq!(
        rejected("[stages.a]\nkind = \"command\"\nrun = 5\n", &[]),
        r#"error: parameter `run` of stage `a`: expected a string, found integer
 --> p.toml:3:7
  |
3 | run = 5
  |       ^
"#
    );
}

#[test]
fn missing_parameter_and_input() {
    assert_eq!(
        rejected("[stages.t]\nkind = \"tasks\"\ncount = \"many\"\n\n[stages.c]\nkind = \"command\"\n", &[]),
        r#"error: parameter `count` of stage `t`: expected an integer, found string
 --> p.toml:3:9
  |
3 | count = "many"
  |         ^^^^^^

error: stage `t` (kind `tasks`) needs input `data`
 --> p.toml:1:9
  |
1 | [stages.t]
  |         ^
  = help: `data`: a `dataset` stage; write inputs = { data = "stage" }

error: stage `c` (kind `command`) needs parameter `run`
 --> p.toml:5:9
  |
5 | [stages.c]
  |         ^
  = help: `run`: the shell command (run by `sh -c` in the pipeline's directory)
"#
    );
}

#[test]
fn input_naming_a_missing_stage() {
    assert_eq!(
        rejected("[stages.a]\nkind = \"command\"\nrun = \"true\"\ninputs = { x = \"nope\" }\n", &[]),
        r#"error: input `x` of stage `a` names no stage `nope`
 --> p.toml:4:16
  |
4 | inputs = { x = "nope" }
  |                ^^^^^^
  = help: stages: a
"#
    );
}

#[test]
fn a_cycle_is_printed() {
    let text = "[stages.a]\nkind = \"command\"\nrun = \"true\"\ninputs = { x = \"c\" }\n\n[stages.b]\nkind = \"command\"\nrun = \"true\"\ninputs = { x = \"a\" }\n\n[stages.c]\nkind = \"command\"\nrun = \"true\"\ninputs = { x = \"b\" }\n";
    assert_eq!(
        rejected(text, &[]),
        r#"error: the stages form a cycle: b → c → a → b
  --> p.toml:14:16
   |
14 | inputs = { x = "b" }
   |                ^^^
   = help: a stage cannot depend, directly or not, on its own output
"#
    );
}

#[test]
fn sweep_keys_naming_missing_stages_or_parameters() {
    let text = "[stages.a]\nkind = \"command\"\nrun = \"true\"\n\n[stages.t]\nkind = \"tasks\"\ninputs = { data = \"a\" }\n\n[sweep]\n\"b.n\" = [1, 2]\n\"t.colour\" = [1]\n\"t.count\" = [1, \"x\"]\n";
    assert_eq!(
        rejected(text, &[]),
        r#"error: sweep key `b.n` names no stage `b`
  --> p.toml:10:1
   |
10 | "b.n" = [1, 2]
   | ^^^^^
   = help: stages: a, t

error: sweep key `t.colour`: stage `t` (kind `tasks`) has no parameter `colour`
  --> p.toml:11:1
   |
11 | "t.colour" = [1]
   | ^^^^^^^^^^
   = help: known parameters: count, seed, val_tasks, test_tasks, val_fraction, train_per_class, test_per_class

error: sweep `t.count`: expected an integer, found string
  --> p.toml:12:17
   |
12 | "t.count" = [1, "x"]
   |                 ^^^
"#
    );
}

#[test]
fn a_path_parameter_must_exist() {
    assert_eq!(
        rejected("[stages.d]\nkind = \"dataset\"\nformat = \"idx\"\npath = \"nowhere/data\"\n", &[]),
        r#"error: parameter `path` of stage `d`: no file or directory ./nowhere/data
 --> p.toml:4:8
  |
4 | path = "nowhere/data"
  |        ^^^^^^^^^^^^^^
"#
    );
}

#[test]
fn bad_set_arguments() {
    let ok = "[stages.a]\nkind = \"command\"\nrun = \"true\"\n";
    assert_eq!(
        rejected(ok, &["--set", "a.outputs=3"]),
        "error: `a.outputs = 3`: expected an array (a string each), found integer\n"
    );
    assert_eq!(rejected(ok, &["--set", "b.x=1"]), "error: `b.x`: no stage `b` in p.toml\n");
    assert_eq!(rejected(ok, &["--set", "ax=1"]), "error: --set ax=1: expected stage.param=value\n");
    assert_eq!(rejected(ok, &["nope"]), "error: no stage `nope` in p.toml\n  = help: stages: a\n");
}

#[test]
fn unknown_top_level_table_and_header_key() {
    assert_eq!(
        rejected("[pipeline]\nname = \"x\"\nsed = 3\n\n[stage.a]\nkind = \"command\"\n", &[]),
        r#"error: unknown key `sed` in [pipeline]
 --> p.toml:3:1
  |
3 | sed = 3
  | ^^^
  = help: [pipeline] takes name, seed and description

error: unknown top-level key `stage`
 --> p.toml:5:2
  |
5 | [stage.a]
  |  ^^^^^
  = help: a pipeline file has the tables [pipeline], [stages.NAME], [sweep] and [executor]
"#
    );
}

#[test]
fn executor_settings() {
    let text = "[stages.a]\nkind = \"command\"\nrun = \"true\"\n\n[executor]\nkind = \"pbs\"\ncpus = 0\nshards = 2\n\n\
                [executor.stages.a]\nshards = 4\ngpus = 1\n\n[executor.stages.b]\ntime = \"1:00:00\"\n";
    assert_eq!(
        rejected(text, &[]),
        r#"error: `executor.kind` must be "local" or "slurm", found "pbs"
 --> p.toml:6:8
  |
6 | kind = "pbs"
  |        ^^^^^

error: `cpus` must be a positive integer, found 0
 --> p.toml:7:8
  |
7 | cpus = 0
  |        ^

error: `shards` is set per stage
 --> p.toml:8:1
  |
8 | shards = 2
  | ^^^^^^
  = help: write it in [executor.stages.NAME], e.g. [executor.stages.zoo] shards = 4

error: stage `a` (kind `command`) cannot be split into shards
  --> p.toml:11:1
   |
11 | shards = 4
   | ^^^^^^

error: unknown executor setting `gpus`
  --> p.toml:12:1
   |
12 | gpus = 1
   | ^^^^
   = help: known: partition, time, cpus, memory, gres, sbatch_args and shards

error: [executor.stages.b] names no stage
  --> p.toml:14:18
   |
14 | [executor.stages.b]
   |                  ^
   = help: stages: a
"#
    );
}

const DATA_TASKS: &str = "[stages.a]\nkind = \"command\"\nrun = \"echo ran > ran.txt\"\n\n[stages.d]\nkind = \"dataset\"\n\n[stages.t]\nkind = \"tasks\"\ninputs = { data = \"d\" }\n";

#[test]
fn a_parameter_out_of_range_is_refused_before_anything_runs() {
    let text = format!("{DATA_TASKS}val_tasks = 1.5\n");
    assert_eq!(
        rejected(&text, &[]),
        r#"error: stage `t` (kind `tasks`): parameter `val_tasks` must be in [0, 1], got 1.5
  --> p.toml:11:13
   |
11 | val_tasks = 1.5
   |             ^^^
"#
    );
}

#[test]
fn every_sweep_variant_is_validated_and_the_bad_value_pointed_at() {
    let text = format!("{DATA_TASKS}\n[sweep]\n\"t.val_fraction\" = [0.1, 1.0]\n");
    assert_eq!(
        rejected(&text, &[]),
        r#"error: stage `t` (kind `tasks`): parameter `val_fraction` must be in [0, 1), got 1 (sweep `t.val_fraction = 1.0`)
  --> p.toml:13:26
   |
13 | "t.val_fraction" = [0.1, 1.0]
   |                          ^^^
"#
    );
}

#[test]
fn a_set_out_of_range_is_refused_with_its_origin() {
    assert_eq!(
        rejected(DATA_TASKS, &["--set", "t.count=0"]),
        "error: stage `t` (kind `tasks`): parameter `count` must be ≥ 1, got 0\n  (from `--set t.count=0`)\n"
    );
}

#[test]
fn a_missing_path_in_a_sweep_is_refused() {
    let text = "[stages.d]\nkind = \"dataset\"\nformat = \"idx\"\npath = \".\"\n\n[sweep]\n\"d.path\" = [\".\", \"nowhere\"]\n";
    assert_eq!(
        rejected(text, &[]),
        r#"error: sweep `d.path`: no file or directory ./nowhere
 --> p.toml:7:18
  |
7 | "d.path" = [".", "nowhere"]
  |                  ^^^^^^^^^
"#
    );
}

#[test]
fn non_finite_numbers_are_refused_where_they_are_written() {
    assert_eq!(
        rejected("[stages.a]\nkind = \"command\"\nrun = \"true\"\nparams = { x = -inf }\n", &[]),
        r#"error: `-inf` is not allowed: parameter values must be finite numbers
 --> p.toml:4:16
  |
4 | params = { x = -inf }
  |                ^^^^
"#
    );
    let ok = "[stages.a]\nkind = \"command\"\nrun = \"true\"\n";
    assert_eq!(
        rejected(ok, &["--set", "a.x=nan"]),
        "error: --set a.x=nan: `nan` is not allowed: parameter values must be finite numbers\n"
    );
    assert_eq!(
        rejected(&format!("{ok}[sweep]\n\"a.x\" = [1e400]\n"), &[]),
        r#"error: `1e400` is out of range for a 64-bit float
 --> p.toml:5:10
  |
5 | "a.x" = [1e400]
  |          ^^^^^
"#
    );
}

#[test]
fn stage_names_are_letters_digits_dashes_and_underscores() {
    assert_eq!(
        rejected("[stages.\"../x\"]\nkind = \"command\"\nrun = \"true\"\n", &[]),
        r#"error: stage name `../x` is not allowed
 --> p.toml:1:9
  |
1 | [stages."../x"]
  |         ^^^^^^
  = help: stage names are letters, digits, `-` and `_` (they name files and Slurm jobs)
"#
    );
}

#[test]
fn a_sweep_of_more_than_10000_variants_is_refused() {
    let axes: String = (1..=5).map(|i| format!("\"a.p{i}\" = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n")).collect();
    assert_eq!(
        rejected(&format!("[stages.a]\nkind = \"command\"\nrun = \"true\"\n[sweep]\n{axes}"), &[]),
        r#"error: the sweep has 100000 variants, more than 10000
 --> p.toml:5:1
  |
5 | "a.p1" = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  | ^^^^^^
  = help: split it into several pipeline files, or sweep fewer values
"#
    );
}

#[test]
fn a_bad_choice_names_its_place_and_the_values_its_enum_declares() {
    let text = format!(
        "{DATA_TASKS}\n[stages.z]\nkind = \"zoo\"\ninputs = {{ data = \"d\", tasks = \"t\" }}\nlr_distribution = \"uniform\"\n"
    );
    assert_eq!(
        rejected(&text, &[]),
        r#"error: parameter `lr_distribution` of stage `z`: expected one of "log-uniform", "log-normal", found "uniform"
  --> p.toml:15:19
   |
15 | lr_distribution = "uniform"
   |                   ^^^^^^^^^
"#
    );
}

#[test]
fn a_negative_seed_is_refused_at_its_place() {
    let text = format!("{DATA_TASKS}seed = -1\n");
    assert_eq!(
        rejected(&text, &[]),
        r#"error: stage `t` (kind `tasks`): parameter `seed` must be ≥ 0 (a seed), got -1
  --> p.toml:11:8
   |
11 | seed = -1
   |        ^^
"#
    );
}

const ZOO: &str = "\n[stages.z]\nkind = \"zoo\"\ninputs = { data = \"d\", tasks = \"t\" }\n";

#[test]
fn a_diversity_reference_needs_two_replicas() {
    let text = format!("{DATA_TASKS}{ZOO}\n[stages.r]\nkind = \"replicas\"\ninputs = {{ zoo = \"z\", data = \"d\", tasks = \"t\" }}\nreplicas = 1\n");
    assert_eq!(
        rejected(&text, &[]),
        r#"error: stage `r` (kind `replicas`): parameter `replicas` must be at least 2 (a diversity reference compares pairs of models), got 1
  --> p.toml:19:12
   |
19 | replicas = 1
   |            ^
"#
    );
}

#[test]
fn flow_steps_and_guidance_out_of_range_are_refused_before_anything_runs() {
    let stage = |name: &str, line: &str| {
        format!("\n[stages.{name}]\nkind = \"sample\"\nmethod = \"flow\"\ninputs = {{ tasks = \"t\" }}\n{line}\n")
    };
    let text =
        format!("{DATA_TASKS}{}{}{}", stage("s1", "steps = 0"), stage("s2", "steps = 1001"), stage("s3", "guidance = 25.0"));
    assert_eq!(
        rejected(&text, &[]),
        r#"error: stage `s1` (kind `sample`): parameter `steps` must be ≥ 1, got 0
  --> p.toml:16:9
   |
16 | steps = 0
   |         ^

error: stage `s2` (kind `sample`): parameter `steps` must be at most 1000, got 1001
  --> p.toml:22:9
   |
22 | steps = 1001
   |         ^^^^

error: stage `s3` (kind `sample`): parameter `guidance` must be in [0, 20], got 25
  --> p.toml:28:12
   |
28 | guidance = 25.0
   |            ^^^^
"#
    );
}

#[test]
fn a_flow_whose_heads_do_not_divide_its_width_is_refused() {
    let text = format!("{DATA_TASKS}\n[stages.f]\nkind = \"flow\"\ninputs = {{ pca = \"t\", autoencoder = \"t\", zoo = \"t\", embed = \"t\" }}\nd_model = 10\nheads = 4\n");
    assert_eq!(
        rejected(&text, &[]),
        r#"error: stage `f` (kind `flow`): parameter `heads` 4 does not divide d_model = 10
  --> p.toml:16:9
   |
16 | heads = 4
   |         ^
"#
    );
}

/// `device = "cuda"` on every kind that has a `device`, in a build without the `cuda` feature: each
/// stage is refused by name, with how to build, before anything runs.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_cuda_feature_is_refused_for_every_learned_stage() {
    let kinds = [
        ("zoo", "zoo", "data = \"d\", tasks = \"t\""),
        ("emb", "dataset-embed", "data = \"d\", tasks = \"t\""),
        ("ae", "autoencoder", "pca = \"t\""),
        ("al", "align", "zoo = \"t\", pca = \"t\", autoencoder = \"t\", embed = \"t\""),
        ("gen", "generator", "zoo = \"t\", tasks = \"t\", data = \"d\", embed = \"t\""),
        ("fl", "flow", "pca = \"t\", autoencoder = \"t\", zoo = \"t\", embed = \"t\""),
        ("s", "sample", "tasks = \"t\", generator = \"t\""),
        ("rec", "evaluate-reconstruction", "zoo = \"t\", pca = \"t\", data = \"d\""),
    ];
    let mut text = DATA_TASKS.to_string();
    for (name, kind, inputs) in kinds {
        let method = if kind == "sample" { "method = \"generator\"\n" } else { "" };
        text.push_str(&format!("\n[stages.{name}]\nkind = \"{kind}\"\ninputs = {{ {inputs} }}\n{method}device = \"cuda\"\n"));
    }
    let err = rejected(&text, &[]);
    for (name, kind, _) in kinds {
        let want = format!(
            "error: stage `{name}` (kind `{kind}`): parameter `device` = \"cuda\", but this wspace was built without the \
             `cuda` cargo feature: build it with `cargo build --release --features cuda`"
        );
        assert!(err.contains(&want), "{kind}: {err}");
    }
    assert_eq!(err.matches("device = \"cuda\"\n").count(), kinds.len(), "each points at its line: {err}");
}
