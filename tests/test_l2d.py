"""The L2D family (METHODS.md §3): label-wise heads, CNN backbones, the distill method, teacher_dir, CLI."""

import numpy as np
import pytest
import torch

from mlkd.backbones import (
    LabelQueryAttentionHead,
    LabelwiseProjectionHead,
    ModelOutput,
    build_backbone,
    count_parameters,
)
from mlkd.cli import main
from mlkd.estimator import DistillClassifier, MultiLabelClassifier
from mlkd.methods import REGISTRY, build_method
from mlkd.preprocessing import FeatureScaler

from .helpers import batch_of, ctx, linear_problem

TINY_FIT = dict(hidden=16, teacher_hidden=32, embed_dim=8, max_epochs=3, patience=3)
#: A student of a saved teacher (teacher_dir): the teacher's size is the saved model's, not a parameter
SAVED_FIT = {k: v for k, v in TINY_FIT.items() if k != "teacher_hidden"}


# -- heads and backbones --------------------------------------------------------------------------------
def test_projection_head_embeddings_and_logits():
    torch.manual_seed(0)
    head = LabelwiseProjectionHead(in_dim=6, n_labels=4, embed_dim=3)
    h = torch.randn(5, 6)
    emb, logits = head(h)
    assert emb.shape == (5, 4, 3) and logits.shape == (5, 4)
    for k in range(4):  # E_k = W_k h and logit_k = ⟨E_k, w_k⟩ + b_k, label by label
        torch.testing.assert_close(emb[:, k], h @ head.projection[k].T)
        torch.testing.assert_close(logits[:, k], emb[:, k] @ head.weight[k] + head.bias[k])


def test_attention_head_queries_are_fixed_buffers():
    torch.manual_seed(0)
    head = LabelQueryAttentionHead(in_channels=6, n_labels=4, embed_dim=8)
    tokens = torch.randn(3, 5, 6)
    emb, logits = head(tokens)
    assert emb.shape == (3, 4, 8) and logits.shape == (3, 4)
    torch.testing.assert_close(logits, (emb * head.weight).sum(-1) + head.bias)
    assert "queries" not in dict(head.named_parameters()) and "queries" in head.state_dict()
    assert not head.queries.requires_grad
    logits.sum().backward()
    assert head.queries.grad is None and head.key.weight.grad is not None


def test_cnn_backbones_read_flattened_images_and_differ_tenfold_in_size():
    torch.manual_seed(0)
    teacher = build_backbone("cnn", 256, 10, hidden=40, depth=2, embed_dim=32)
    student = build_backbone("cnn", 256, 10, hidden=16, depth=1, embed_dim=32)
    out = student(torch.randn(4, 256))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (4, 10) and out.label_embeddings.shape == (4, 10, 32)
    assert out.features.shape == (4, 64) and [f.shape[-1] for f in out.intermediates] == [16, 8, 4]
    assert 0.9e6 < count_parameters(teacher) < 1.3e6 and 0.05e6 < count_parameters(student) < 0.15e6


def test_cnn_image_shape_must_match_the_features():
    with pytest.raises(ValueError, match="image_shape"):
        build_method("labelwise", 250, 3, {"backbone": "cnn"})
    with pytest.raises(ValueError, match="image_shape"):
        build_method("labelwise", 48, 3, {"backbone": "cnn", "image_shape": "1,6,6"})
    model = build_method("labelwise", 48, 3, {"backbone": "cnn", "image_shape": "3,4,4", "hidden": 4})
    assert model(torch.randn(2, 48)).shape == (2, 3)
    # 4×4 ends as a 1×1 map: a one-row batch leaves BatchNorm one value per channel. Saved 4×4 models still
    # load and predict; training on such a batch says why it cannot, instead of BatchNorm's message
    model.eval()
    assert model(torch.randn(1, 48)).shape == (1, 3)
    model.train()
    with pytest.raises(ValueError, match="one-row batch of 4×4 images .* at least 5×5"):
        model(torch.randn(1, 48))
    bigger = build_method("labelwise", 75, 3, {"backbone": "cnn", "image_shape": "3,5,5", "hidden": 4}).train()
    assert bigger(torch.randn(1, 75)).shape == (1, 3)  # a 2×2 final map trains on one row


# -- the distill method ---------------------------------------------------------------------------------
def student_with_teacher(**params):
    student = build_method("distill", 6, 4, {"hidden": 8, "embed_dim": 4, **params}, seed=0)
    teacher = build_method("labelwise", 6, 4, {"hidden": 32, "embed_dim": 6, "dropout": 0.5}, seed=1)
    student.attach_teacher(teacher)
    return student, teacher


def test_teacher_gets_no_gradient_stays_in_eval_mode_and_is_not_saved():
    student, teacher = student_with_teacher()
    fresh_keys = set(build_method("distill", 6, 4, {"hidden": 8, "embed_dim": 4}).state_dict())
    student.train()
    batch = batch_of(positive_rate=0.5)
    out = student.step(batch, ctx())
    sum(out.losses.values()).backward()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert set(student.state_dict()) == fresh_keys
    assert not any(p is q for p in student.parameters() for q in teacher.parameters())
    torch.testing.assert_close(out.extras["teacher_logits"], teacher(batch.x))  # dropout off: deterministic
    assert count_parameters(student) < count_parameters(teacher)


@pytest.mark.parametrize(
    "params, terms",
    [
        ({}, {"bce", "mld", "cd", "id"}),  # L2D = MLD + LED
        ({"feature_loss": "none"}, {"bce", "mld"}),  # MLD only
        ({"lambda_id": 0.0}, {"bce", "mld", "cd"}),  # MLD + CD
        ({"lambda_cd": 0.0}, {"bce", "mld", "id"}),  # MLD + ID
        ({"logit_loss": "kd", "feature_loss": "rkd"}, {"bce", "kd", "rkd"}),
        ({"logit_loss": "mse", "feature_loss": "pkt"}, {"bce", "mse", "pkt"}),
        ({"logit_loss": "none", "feature_loss": "none"}, {"bce"}),
        # METHODS.md §3's optional feature-KD slot: a pooled-feature loss beside LED
        ({"extra_feature_loss": "rkd"}, {"bce", "mld", "cd", "id", "rkd_extra"}),
        ({"logit_loss": "none", "feature_loss": "none", "extra_feature_loss": "pkt"}, {"bce", "pkt_extra"}),
    ],
)
def test_flags_select_the_loss_terms(params, terms):
    student, _ = student_with_teacher(**params)
    out = student.step(batch_of(positive_rate=0.5), ctx())
    assert set(out.losses) == terms
    assert all(torch.isfinite(v) and v >= 0 for v in out.losses.values())


def test_the_extra_feature_slot_adds_its_weighted_loss_and_leaves_the_published_cells_keys_alone():
    from mlkd import losses
    from mlkd.methods import make_config
    from mlkd.methods.base import config_identity

    batch = batch_of(positive_rate=0.5)
    plain, _ = student_with_teacher()
    both, teacher = student_with_teacher(extra_feature_loss="pkt", lambda_extra=0.5)
    plain.eval(), both.eval()  # no dropout: the features below are the step's
    out_plain, out = plain.step(batch, ctx()), both.step(batch, ctx())
    for name in out_plain.losses:  # LED and MLD as without the slot
        torch.testing.assert_close(out.losses[name], out_plain.losses[name])
    expected = 0.5 * losses.pkt(both.backbone(batch.x).features, teacher.outputs(batch.x).features)
    torch.testing.assert_close(out.losses["pkt_extra"], expected)
    # off (the default) the slot is no part of a config's identity: L2D's benchmark cells keep their keys
    identity = config_identity(make_config("distill", {"lambda_extra": 3.0}))
    assert "extra_feature_loss" not in identity and "lambda_extra" not in identity
    assert config_identity(make_config("distill", {"extra_feature_loss": "rkd"}))["extra_feature_loss"] == "rkd"
    with pytest.raises(ValueError, match="'extra_feature_loss'='rkd' repeats feature_loss"):
        build_method("distill", 6, 4, {"feature_loss": "rkd", "extra_feature_loss": "rkd"})


def test_distill_without_teacher_says_how_to_train_one():
    student = build_method("distill", 6, 4, {"hidden": 8})
    with pytest.raises(ValueError, match="needs a trained teacher"):
        student.step(batch_of(positive_rate=0.5), ctx())


def test_bad_flags_are_rejected():
    for params in ({"logit_loss": "kl"}, {"feature_loss": "fitnet"}, {"T": 0.0}, {"backbone": "vit"},
                   {"extra_feature_loss": "led"}, {"lambda_extra": -1.0}):
        with pytest.raises(ValueError, match=f"'{next(iter(params))}'"):
            build_method("distill", 6, 4, params)


# -- estimator ------------------------------------------------------------------------------------------
def test_estimator_fit_save_load_gives_the_same_predictions(tmp_path):
    X, Y = linear_problem(n=240, d=8, L=4)
    clf = DistillClassifier(**TINY_FIT).fit(X, Y)
    assert set(clf.stage_results_) == {"teacher", "student"}
    assert clf.stage_results_["teacher"].epochs_run == 3
    assert count_parameters(clf.model_) < count_parameters(clf.stage_models_["teacher"])
    assert clf.model_.teacher is None
    loaded = MultiLabelClassifier.load(clf.save(tmp_path / "student"))
    assert type(loaded) is DistillClassifier
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    assert (loaded.predict(X) == clf.predict(X)).all()


def test_teacher_dir_loads_a_saved_model_with_its_own_scaling(tmp_path):
    X, Y = linear_problem(n=240, d=8, L=4)
    X = X * 3.0 + 1.0
    saved = MultiLabelClassifier("labelwise", hidden=32, embed_dim=8, max_epochs=3).fit(X[:120], Y[:120])
    saved.save(tmp_path / "teacher")
    clf = MultiLabelClassifier("distill", teacher_dir=str(tmp_path / "teacher"), **SAVED_FIT).fit(X, Y)
    assert clf.stage_results_["teacher"].epochs_run == 0  # loaded, not trained
    teacher = clf.stage_models_["teacher"]
    assert clf.scaler_.mean[0] != pytest.approx(saved.scaler_.mean[0])  # the two scalings differ …
    with torch.no_grad():  # … yet the teacher sees the student's inputs as its own
        proba = torch.sigmoid(teacher(torch.as_tensor(clf.scaler_.transform(X)))).numpy()
    np.testing.assert_allclose(proba, saved.predict_proba(X), rtol=1e-4, atol=1e-6)


def test_teacher_dir_errors_name_the_problem(tmp_path):
    X, Y = linear_problem(n=120, d=8, L=4)
    MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X, Y).save(tmp_path / "bce")
    with pytest.raises(ValueError, match="label-wise embeddings"):
        DistillClassifier(teacher_dir=str(tmp_path / "bce"), **SAVED_FIT).fit(X, Y)
    clf = DistillClassifier(teacher_dir=str(tmp_path / "bce"), feature_loss="none", **SAVED_FIT).fit(X, Y)
    assert clf.stage_results_["student"].epochs_run == 3  # logit KD from any saved model
    with pytest.raises(ValueError, match="features"):
        DistillClassifier(teacher_dir=str(tmp_path / "bce"), **SAVED_FIT).fit(X[:, :5], Y)
    with pytest.raises(ValueError, match="does not exist"):
        DistillClassifier(teacher_dir=str(tmp_path / "missing"), **SAVED_FIT).fit(X, Y)


def test_a_saved_model_fitted_on_other_or_reordered_labels_is_refused_not_misread(tmp_path):
    import pandas as pd

    X, Y = linear_problem(n=120, d=8, L=4)
    names, columns = ["a", "b", "c", "d"], [f"f{j}" for j in range(8)]
    MultiLabelClassifier("labelwise", hidden=8, embed_dim=4, max_epochs=1).fit(
        pd.DataFrame(X, columns=columns), Y, label_names=names).save(tmp_path / "t")
    params = dict(teacher_dir=str(tmp_path / "t"), **SAVED_FIT)
    with pytest.raises(ValueError, match="same labels in another order"):  # label k would learn the teacher's 3 − k
        DistillClassifier(**params).fit(X, Y[:, ::-1], label_names=names[::-1])
    with pytest.raises(ValueError, match="other labels"):
        DistillClassifier(**params).fit(X, Y, label_names=["w", "x", "y", "z"])
    with pytest.raises(ValueError, match="same feature columns in another order"):
        DistillClassifier(**params).fit(pd.DataFrame(X[:, ::-1], columns=columns[::-1]), Y, label_names=names)
    with pytest.raises(ValueError, match="model_dir .* other labels"):  # fine-tuning reads its labels the same way
        MultiLabelClassifier("pretrained", model_dir=str(tmp_path / "t"), max_epochs=1).fit(
            X, Y, label_names=["w", "x", "y", "z"])
    DistillClassifier(**params).fit(X, Y, label_names=names)  # the same labels in the same order
    DistillClassifier(**params).fit(X, Y)  # unnamed labels and columns: nothing to compare


def test_a_teacher_fitted_on_a_label_dataframe_without_names_is_not_refused_for_named_labels(tmp_path):
    import pandas as pd

    # pd.DataFrame(Y) names its labels '0', '1', …: positions, as label_0 … are, not labels another data set lacks
    X, Y = linear_problem(n=120, d=8, L=4)
    MultiLabelClassifier("labelwise", hidden=8, embed_dim=4, max_epochs=1).fit(X, pd.DataFrame(Y)).save(tmp_path / "t")
    MultiLabelClassifier("labelwise", hidden=8, embed_dim=4, max_epochs=1).fit(
        X, Y, label_names=["a", "b", "c", "d"]).save(tmp_path / "named")
    DistillClassifier(teacher_dir=str(tmp_path / "t"), **SAVED_FIT).fit(X, Y, label_names=["a", "b", "c", "d"])
    DistillClassifier(teacher_dir=str(tmp_path / "named"), **SAVED_FIT).fit(X, pd.DataFrame(Y))


def test_a_teacher_whose_save_was_killed_between_its_two_renames_is_distilled_as_load_model_reads_it(tmp_path):
    import os

    # save_model renames the weights, then the config: a kill between them leaves the config under its temporary
    # name, and load_model finishes the save; the teacher's label check must read it the same way
    X, Y = linear_problem(n=120, d=8, L=4)
    teacher = tmp_path / "t"
    MultiLabelClassifier("labelwise", hidden=8, embed_dim=4, max_epochs=1).fit(
        X, Y, label_names=["a", "b", "c", "d"]).save(teacher)
    os.replace(teacher / "config.json", teacher / ".config.json.abcd1234.tmp")
    clf = DistillClassifier(teacher_dir=str(teacher), **SAVED_FIT).fit(X, Y, label_names=["a", "b", "c", "d"])
    assert clf.stage_results_["teacher"].epochs_run == 0 and (teacher / "config.json").is_file()
    with pytest.raises(ValueError, match=r"^teacher_dir of method 'distill': model directory .* does not exist"):
        DistillClassifier(teacher_dir=str(tmp_path / "missing"), **SAVED_FIT).fit(X, Y)
    os.replace(teacher / "config.json", teacher / ".config.json.abcd1234.tmp")  # mlkd distill --teacher too
    data = tmp_path / "d.arff"
    rows = [",".join([*(f"{v:.5f}" for v in x), *map(str, y)]) for x, y in zip(X, Y, strict=True)]
    data.write_text("\n".join(["@relation r", *(f"@attribute f{j} numeric" for j in range(8)),
                               *(f"@attribute {k} {{0,1}}" for k in "abcd"), "@data", *rows]))
    assert main(["distill", str(data), "--n-labels", "4", "--teacher", str(teacher), "--student-spec", "hidden=4",
                 "embed_dim=4", "max_epochs=1", "--out", str(tmp_path / "s"), "-q"]) == 0


def test_a_student_records_which_teacher_it_learned_from_and_loads_without_it(tmp_path, monkeypatch):
    import json
    import shutil

    from mlkd import load_model

    X, Y = linear_problem(n=120, d=8, L=4)
    teacher = MultiLabelClassifier("labelwise", hidden=16, embed_dim=4, max_epochs=1).fit(X, Y)
    teacher_id = json.loads((teacher.save(tmp_path / "runs" / "t") / "config.json").read_text())["save_id"]
    monkeypatch.chdir(tmp_path / "runs")  # the teacher given as a path relative to the working directory
    student = DistillClassifier(teacher_dir="t", **SAVED_FIT).fit(X, Y)
    student.save(tmp_path / "student")
    MultiLabelClassifier("labelwise", hidden=16, embed_dim=4, max_epochs=1, random_state=1).fit(X, Y).save(
        tmp_path / "runs" / "t", overwrite=True)  # another model fitted into the teacher's folder afterwards
    shutil.move(tmp_path / "runs" / "t", tmp_path / "gone")
    monkeypatch.chdir(tmp_path)
    expected = {"teacher_dir": {"path": str((tmp_path / "runs" / "t").resolve()), "save_id": teacher_id}}
    loaded = load_model(tmp_path / "student")
    assert loaded.source_models_ == student.source_models_ == expected  # the folder and the model it held then
    np.testing.assert_array_equal(loaded.predict_proba(X), student.predict_proba(X))
    loaded.save(tmp_path / "again")  # a loaded student saved again keeps the record
    assert json.loads((tmp_path / "again" / "config.json").read_text())["source_models"] == expected
    assert MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X, Y).source_models_ == {}


def test_a_fine_tuned_saved_model_loads_without_the_model_it_started_from(tmp_path):
    import shutil

    from mlkd import load_model

    X, Y = linear_problem(n=120, d=8, L=4)
    MultiLabelClassifier("labelwise", hidden=16, max_epochs=2).fit(X, Y).save(tmp_path / "base")
    tuned = MultiLabelClassifier("pretrained", model_dir=str(tmp_path / "base"), max_epochs=2).fit(X, Y)
    tuned.save(tmp_path / "tuned")
    again = MultiLabelClassifier("pretrained", model_dir=str(tmp_path / "tuned"), max_epochs=2).fit(X, Y)
    again.save(tmp_path / "again")  # fine-tuned twice: both wrapped models are recorded
    shutil.rmtree(tmp_path / "base")
    shutil.move(tmp_path / "tuned", tmp_path / "moved")
    np.testing.assert_array_equal(load_model(tmp_path / "moved").predict_proba(X), tuned.predict_proba(X))
    np.testing.assert_array_equal(load_model(tmp_path / "again").predict_proba(X), again.predict_proba(X))


def test_pretrained_maps_raw_or_bound_inputs_into_the_saved_scale(tmp_path):
    X, Y = linear_problem(n=120, d=8, L=4)
    X = X * 2.0 - 3.0
    saved = MultiLabelClassifier("labelwise", hidden=8, embed_dim=4, max_epochs=1).fit(X, Y)
    saved.save(tmp_path / "m")
    model = build_method("pretrained", 8, 4, {"model_dir": str(tmp_path / "m")})
    with torch.no_grad():
        raw = torch.sigmoid(model(torch.as_tensor(X))).numpy()
        other = FeatureScaler().fit(X[:30])
        model.bind_input_scaler(other)
        bound = torch.sigmoid(model(torch.as_tensor(other.transform(X)))).numpy()
    np.testing.assert_allclose(raw, saved.predict_proba(X), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bound, saved.predict_proba(X), rtol=1e-4, atol=1e-6)


def test_cnn_track_trains_through_the_estimator():
    rng = np.random.default_rng(0)
    X = rng.random((60, 64)).astype(np.float32)
    Y = (X[:, :3] > 0.5).astype(np.uint8)
    clf = DistillClassifier(backbone="cnn", hidden=4, teacher_hidden=8, embed_dim=8, max_epochs=2).fit(X, Y)
    assert clf.predict_proba(X).shape == (60, 3)
    assert count_parameters(clf.model_) < count_parameters(clf.stage_models_["teacher"])


def test_cnn_predict_runs_in_chunks_sized_by_the_images_not_a_fixed_8192_rows(monkeypatch):
    # 8192 rows at once: ~7 GB of activations for 32×32 images through the default teacher CNN (measured), ~28 GB
    # for 64×64 — predict on many images ran out of memory where an MLP's 8192-row chunks take a few MB
    from mlkd import backbones, trainer

    teacher = build_method("labelwise", 64 * 64, 10, {"backbone": "cnn", "hidden": 40, "depth": 2})
    chunks = []

    def record(self, x):
        chunks.append(x.shape[0])
        return ModelOutput(torch.zeros(x.shape[0], 10))

    monkeypatch.setattr(backbones.ResNetBackbone, "forward", record)
    assert trainer.predict_logits(teacher, np.zeros((9000, 64 * 64), np.float32)).shape == (9000, 10)
    assert sum(chunks) == 9000 and max(chunks) <= 200  # ≤ 0.5 GB of activations at ~3.9 MB a row
    mlp = build_method("labelwise", 64 * 64, 10, {"hidden": 40})
    assert trainer.predict_chunk_rows(mlp) == trainer.PREDICT_ROWS  # an MLP keeps its 8192-row chunks
    monkeypatch.undo()

    # chunked or not, the same predictions (eval mode: batch normalisation uses its running statistics)
    small = build_method("labelwise", 256, 10, {"backbone": "cnn", "hidden": 4}, seed=0)
    X = np.random.default_rng(0).standard_normal((100, 256)).astype(np.float32)
    whole = trainer.predict_logits(small, X)
    monkeypatch.setattr(trainer, "PREDICT_BYTES", small.backbone.activation_bytes_per_row * 30)
    assert trainer.predict_chunk_rows(small) == 30
    assert torch.equal(trainer.predict_logits(small, X), whole)


def test_registered_with_defaults():
    assert {"labelwise", "distill", "pretrained"} <= set(REGISTRY)
    p = DistillClassifier().get_params()
    assert (p["logit_loss"], p["feature_loss"], p["lambda_logits"], p["lambda_cd"], p["lambda_id"]) == (
        "mld", "led", 10.0, 100.0, 1000.0)


# -- CLI ------------------------------------------------------------------------------------------------
def test_cli_distill_writes_a_student_and_reports_a_bad_teacher_in_one_line(tmp_path, capsys):
    out = tmp_path / "student"
    status = main(["distill", "digits-ml", "--teacher-spec", "hidden=16", "--student-spec", "hidden=8",
                   "embed_dim=4", "max_epochs=1", "--out", str(out), "-q"])
    text = capsys.readouterr().out
    assert status == 0 and (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert "saved to" in text and "teacher trained" in text
    assert MultiLabelClassifier.load(out).method == "distill"

    status = main(["distill", "digits-ml", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "s2")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("mlkd: error: ") and err.count("\n") == 1 and "nope" in err
    assert not (tmp_path / "s2").exists()

    status = main(["distill", "digits-ml", "--teacher", str(out), "--student-spec", "hidden=4", "embed_dim=4",
                   "max_epochs=1", "--out", str(tmp_path / "s3"), "-q"])
    assert status == 0 and "teacher loaded from" in capsys.readouterr().out

    status = main(["distill", "digits-ml", "--teacher-spec", "colour=red", "--out", str(tmp_path / "s4")])
    assert status == 2 and "colour" in capsys.readouterr().err


def test_cli_distill_suggests_a_student_spec_key_it_takes(tmp_path, capsys):
    # the student's training settings are --student-spec keys; a typo of one is not sent to teacher_max_epochs
    for typo, meant in (("max_epoch", "max_epochs"), ("batchsize", "batch_size"), ("hiden", "hidden")):
        assert main(["distill", "digits-ml", "--student-spec", f"{typo}=1", "--out", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert f"{typo!r}: did you mean {meant!r}?" in err and "teacher_" not in err and "max_epochs" in err
    assert not (tmp_path / "s").exists()


def test_cli_distill_refuses_a_teacher_fitted_on_the_files_columns_in_another_order(tmp_path, capsys):
    X, Y = linear_problem(n=120, d=6, L=3)

    def arff(name, features, labels):
        lines = ["@relation r", *(f"@attribute f{j} numeric" for j in features),
                 *(f"@attribute y{k} {{0,1}}" for k in labels), "@data"]
        lines += [",".join([*(f"{x[j]:.5f}" for j in features), *(str(y[k]) for k in labels)])
                  for x, y in zip(X, Y, strict=True)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return str(tmp_path / name)

    same, swapped = arff("a.arff", range(6), range(3)), arff("b.arff", [1, 0, 2, 3, 4, 5], range(3))
    reversed_labels = arff("c.arff", range(6), [2, 1, 0])
    fit = ["--n-labels", "3", "-q"]
    assert main(["fit", same, "-m", "labelwise", "--param", "hidden=8", "--max-epochs", "1", "--out",
                 str(tmp_path / "t"), *fit]) == 0
    student = ["--teacher", str(tmp_path / "t"), "--student-spec", "hidden=4", "embed_dim=4", "max_epochs=1", *fit]
    capsys.readouterr()
    for data, why in ((swapped, "same feature columns in another order"), (reversed_labels, "same labels in another")):
        assert main(["distill", data, *student, "--out", str(tmp_path / "s")]) == 2
        assert why in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert main(["distill", same, *student, "--out", str(tmp_path / "s")]) == 0


def test_a_parameter_of_the_other_backbone_is_refused_not_ignored():
    # image_shape without backbone='cnn' would otherwise train an MLP the user did not ask for
    with pytest.raises(ValueError, match="image_shape.*backbone='cnn' only"):
        build_method("labelwise", 64, 3, {"image_shape": "1,8,8"})
    with pytest.raises(ValueError, match="activation.*backbone='mlp' only"):
        build_method("labelwise", 64, 3, {"backbone": "cnn", "activation": "tanh"})
    build_method("labelwise", 64, 3, {"backbone": "cnn", "image_shape": "1,8,8", "hidden": 4})
    build_method("labelwise", 64, 3, {"activation": "tanh", "hidden": 4})


def test_a_cross_backbone_distillation_takes_each_backbones_parameters():
    # a CNN teacher and an MLP student: image_shape is the teacher's, activation the student's
    build_method("distill", 64, 3, {"teacher_backbone": "cnn", "image_shape": "1,8,8", "activation": "tanh",
                                    "hidden": 4, "teacher_hidden": 4})
    build_method("distill", 64, 3, {"backbone": "cnn", "teacher_backbone": "mlp", "image_shape": "1,8,8",
                                    "activation": "tanh", "hidden": 4, "teacher_hidden": 4})
    with pytest.raises(ValueError, match="image_shape"):
        build_method("distill", 64, 3, {"image_shape": "1,8,8", "hidden": 4})


def test_a_saved_model_an_earlier_mlkd_accepted_still_loads(tmp_path):
    # the backbone check is for new fits: a CNN model saved with activation set (ignored, as it always was)
    # loads and predicts as it did
    import json

    from mlkd import load_model

    X, Y = linear_problem(n=48, d=16, L=3)
    clf = MultiLabelClassifier("labelwise", backbone="cnn", hidden=4, max_epochs=1, patience=1).fit(X, Y)
    clf.save(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config["method_params"]["activation"] = "relu"
    config_path.write_text(json.dumps(config))
    assert np.array_equal(load_model(tmp_path / "m").predict_proba(X), clf.predict_proba(X))


def test_vanilla_kd_takes_t2_scaling_and_its_default_keeps_the_published_cells_keys():
    # METHODS.md §3 writes vanilla KD as binKL_T; the published cells (and Hinton's KD) carry T²
    from mlkd import losses
    from mlkd.methods import make_config
    from mlkd.methods.base import config_identity

    batch = batch_of(positive_rate=0.5)
    hinton, teacher = student_with_teacher(logit_loss="kd")
    literal, _ = student_with_teacher(logit_loss="kd", t2_scaling=False)
    literal.attach_teacher(teacher)
    hinton.eval(), literal.eval()
    kd, plain = hinton.step(batch, ctx()).losses["kd"], literal.step(batch, ctx()).losses["kd"]
    with torch.no_grad():
        expected = 10.0 * losses.binary_kl(hinton(batch.x), teacher(batch.x), 4.0).sum() / batch.x.shape[0]
    torch.testing.assert_close(plain, expected)
    torch.testing.assert_close(kd, 16 * plain)
    assert "t2_scaling" not in config_identity(make_config("distill", {"logit_loss": "kd"}))
    assert "t2_scaling" not in config_identity(make_config("distill", {"t2_scaling": False}))  # inert under MLD
    assert config_identity(make_config("distill", {"logit_loss": "kd", "t2_scaling": False}))["t2_scaling"] is False
