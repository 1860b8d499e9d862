"""Where `swapd merge` and `swapd verify` take their C2PA settings (a swapd.toml by --config,
the flags over it), and swapd's local CA: made once however many merges start at the same
time, and a broken one says how to get a new one.  Real certificates, the real c2pa-python,
real processes; every picture is synthetic."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from swapd.cli import main as swapd_main
from swapd.demo.painter import make_background
from swapd.merger.c2pa_credentials import CredentialsError, load_credentials, make_local_ca
from swapd.merger.content_credentials import read_manifest
from tests.test_c2pa_signers import issue
from tests.test_merger import export_model

pytest.importorskip("c2pa")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A user's signing chain and key, a swapd.toml naming them (and its CA as a trust
    anchor), a model and a painted picture to merge."""
    work = tmp_path_factory.mktemp("c2pa_cli")
    chain, key, ca = issue(work / "certs", ec.generate_private_key(ec.SECP256R1()))
    config = work / "swapd.toml"
    config.write_text(f'[merge]\ndevice = "cpu"\nc2pa_certificate = "{chain}"\n'
                      f'c2pa_private_key = "{key}"\nc2pa_trust_anchors = "{ca}"\n')
    picture = work / "picture.png"
    cv2.imwrite(str(picture), make_background((320, 240), 2))
    return {"config": config, "model": export_model(work / "invert.onnx"),
            "picture": picture, "chain": chain, "key": key, "ca": ca, "work": work}


def _merge(setup: dict[str, Path], out: str, *flags: str) -> Path:
    code = swapd_main(["merge", str(setup["picture"]), "--model", str(setup["model"]),
                       "--output", str(setup["work"] / out), *flags])
    assert code == 0
    return setup["work"] / out / "picture_swapd.png"


def test_merge_signs_with_the_certificate_its_config_names(
        setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--config's [merge] c2pa_certificate and key sign the output (no local CA is made);
    verify --config trusts its c2pa_trust_anchors, so the manifest is valid."""
    monkeypatch.setenv("SWAPD_C2PA_DIR", str(tmp_path / "local"))
    output = _merge(setup, "out_config", "--config", str(setup["config"]))
    assert not (tmp_path / "local").exists()
    assert read_manifest(output).signer == "test signer"
    assert read_manifest(output, setup["ca"].read_bytes()).state == "valid"
    capsys.readouterr()
    assert swapd_main(["verify", str(output), "--config", str(setup["config"])]) == 0
    assert "C2PA manifest valid, made by swapd, trusted signer" in capsys.readouterr().out


def test_the_flags_win_over_the_config(setup: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A certificate pair given as flags signs, whatever --config says; --trust-anchors wins
    over the config's anchors (here: another CA, so the signer is untrusted)."""
    monkeypatch.setenv("SWAPD_C2PA_DIR", str(tmp_path / "local"))
    other = make_local_ca(tmp_path / "other")
    assert other.local_ca
    output = _merge(setup, "out_flags", "--config", str(setup["config"]),
                    "--c2pa-certificate", str(tmp_path / "other" / "signer-chain.pem"),
                    "--c2pa-private-key", str(tmp_path / "other" / "signer-key.pem"))
    assert read_manifest(output).signer == "swapd (local CA)"
    capsys.readouterr()
    assert swapd_main(["verify", str(output), "--config", str(setup["config"]),
                       "--trust-anchors", str(tmp_path / "other" / "local-ca.pem")]) == 0
    out = capsys.readouterr().out
    assert "C2PA manifest valid" in out and "untrusted" not in out, out
    assert swapd_main(["verify", str(output), "--config", str(setup["config"])]) == 0
    assert "untrusted signer" in capsys.readouterr().out
    code = swapd_main(["merge", str(setup["picture"]), "--model", str(setup["model"]),
                       "--output", str(tmp_path / "half"), "--config", str(setup["config"]),
                       "--c2pa-certificate", str(tmp_path / "other" / "signer-chain.pem")])
    assert code == 2 and "come together" in capsys.readouterr().err
    assert not (tmp_path / "half").exists()


def test_a_bad_config_or_a_missing_model_is_a_clear_error(
        setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config whose key is missing stops the merge before any output, naming what to set;
    a config file that is not there is named; a model file that is not there is one line,
    not a traceback."""
    code = swapd_main(["merge", str(setup["picture"]), "--model", str(setup["model"]),
                       "--output", str(tmp_path / "out"), "--config", str(tmp_path / "no.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "no.toml" in err and "Traceback" not in err, err
    half = tmp_path / "half.toml"
    half.write_text(f'[merge]\nc2pa_certificate = "{setup["chain"]}"\n')
    code = swapd_main(["merge", str(setup["picture"]), "--model", str(setup["model"]),
                       "--output", str(tmp_path / "out"), "--config", str(half)])
    err = capsys.readouterr().err
    assert code == 2 and f"{half}: [merge] c2pa_certificate and c2pa_private_key come " \
        "together" in err, err
    assert not (tmp_path / "out").exists()
    code = swapd_main(["merge", str(setup["picture"]), "--model", str(tmp_path / "no.onnx"),
                       "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "no.onnx: model file does not exist" in err
    assert "Traceback" not in err


def test_merges_started_at_once_make_one_local_ca(tmp_path: Path) -> None:
    """Four processes loading the (not yet made) local CA at the same moment (each waits,
    its imports done, for one start time): one makes it, every one signs with that pair."""
    folder = tmp_path / "ca"
    script = ("import sys, time; from pathlib import Path; "
              "from swapd.merger.c2pa_credentials import load_credentials; "
              "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
              "c = load_credentials(local_dir=Path(sys.argv[1])); "
              "print(c.chain_pem.decode().split()[2][:40])")
    start = f"{time.time() + 8:.3f}"  # after every child's imports, on a loaded machine too
    runs = [subprocess.Popen([sys.executable, "-c", script, str(folder), start], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    results = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), results
    assert len({out for out, _ in results}) == 1, results
    assert load_credentials(local_dir=folder).local_ca


def test_a_mismatched_local_ca_says_how_to_get_a_new_one(tmp_path: Path) -> None:
    """The local CA's chain with another CA's key: refused at start, saying which files to
    delete (swapd then makes a new CA); a CA already there is read without taking the lock
    (nothing is written: its folder may be read-only)."""
    make_local_ca(tmp_path / "a")
    make_local_ca(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "signer-key.pem", tmp_path / "a" / "signer-key.pem")
    with pytest.raises(CredentialsError, match=r"delete signer-chain.pem, signer-key.pem and "
                                               r"local-ca.pem in .*a and swapd makes a new CA"):
        load_credentials(local_dir=tmp_path / "a")
    assert load_credentials(local_dir=tmp_path / "b").local_ca  # nothing written there
    assert not (tmp_path / "b" / ".make.lock").exists()
