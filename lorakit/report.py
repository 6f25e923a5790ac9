"""The README's result tables, generated from the notebooks' saved results (`notebooks/results/`).

Numbers in the README are never typed: each table sits between markers
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` and is rewritten by
``python -m lorakit readme`` (``make readme``) from the results the full-mode notebooks saved.
``tests/test_report.py`` fails when the README and the results disagree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np

from lorakit.claims import CLAIMS, Judgement, claims_table, markdown_table, verdict_counts
from lorakit.metrics import mean_ci
from lorakit.paths import PIPELINE_DIR, REPO_ROOT, atomic_path
from lorakit.pretrain import REPORT_NAME
from lorakit.results import RESULTS_DIR, notebook_number
from lorakit.verdicts import paired_difference_ci

README = REPO_ROOT / "README.md"
_ATTRIBUTES = ("colour", "shape", "size", "style")


def _load(results_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("*.json"))}


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def _times(results: dict[str, dict]) -> str:
    lines = ["| notebook | full mode, 2-core CPU |", "|---|---|"]
    for name, saved in results.items():
        lines.append(f"| `{name}` | {_minutes(saved.get('seconds'))} |")
    total = sum(s.get("seconds") or 0 for s in results.values())
    return "\n".join(lines + [f"| all of them | {_minutes(total)} |"])


def _base_quality(results: dict[str, dict]) -> str:
    q = results["01_tiny_stable_diffusion"]["base_quality"]
    lines = [f"| attribute | accuracy ({q['images']} images, {q['prompts']} prompts) | weakest prompt |", "|---|---|---|"]
    for g in ("colour", "shape", "size"):
        w = q["weakest"][g]
        lines.append(f"| {g} | {q['overall'][g]:.2f} | \"{w['prompt']}\": {w[g]:.2f} |")
    lines.append(f"| all three right | {q['overall']['all']:.2f} | |")
    lines += ["", f"Fréchet distance in the classifier's feature space: {q['frechet']:.0f} between generated and real "
              f"images ({q['frechet_real_vs_real']:.0f} between two independent real sets: the noise floor).", "",
              "| held-out concept | prompt | drawn as asked | kept by a VAE round trip |", "|---|---|---|---|"]
    for concept, h in results["01_tiny_stable_diffusion"]["held_out"].items():
        lines.append(f"| {concept} | \"{h['prompt']}\" | {h['drawn']:.0%} | {h['kept_by_vae']:.0%} |")
    return "\n".join(lines)


_MARK = {"meets": "", "inconclusive": "*", "below": "!"}


def _judge_audit(results: dict[str, dict]) -> str:
    a = results["01_tiny_stable_diffusion"]["judge_audit"]
    unreadable = sum(a["unreadable"].values())
    lines = [f"| attribute | agreement on readable images [95% CI] | on all {a['images']} images (no shape an answer: agreed where both read none) "
             "| pixel rules right on renders / on their VAE round trips |", "|---|---|---|---|"]
    for g in _ATTRIBUTES:
        (lo, hi), (lo_all, hi_all) = a["ci"][g], a["ci_all"][g]
        lines.append(f"| {g} | {a['agreement'][g]:.1%} [{lo:.1%}, {hi:.1%}] | {a['agreement_all'][g]:.1%} "
                     f"[{lo_all:.1%}, {hi_all:.1%}] | {a['pixel_rules_on_renders'][g]:.1%} / "
                     f"{a['pixel_rules_on_round_trips'][g]:.1%} |")
    lines += ["", f"The bar: {a['bar']:.0%} per attribute, met when the whole 95% interval (Wilson, over images) lies at "
              "or above it; * marks an interval that contains the bar (inconclusive), ! one wholly below it. "
              f"{unreadable} of {a['images']} images show no recognisable shape "
              f"to the pixel rules, {sum(a['no_object'].values())} no object to the judge. "
              "Situations: " + ", ".join(a["by_situation"]) + ". The same audit on the images of notebooks 04, 04b, 07 and 07b "
              "(agreement on readable images / on all images):", "",
              "| notebook | images | no shape (pixel rules) | no object (judge) | " + " | ".join(_ATTRIBUTES) + " |",
              "|---|---|---|---|" + "---|" * len(_ATTRIBUTES)]
    for notebook in AUDITED:
        n = results[notebook]["judge_audit"]
        lines.append(f"| {notebook_number(notebook)} | {n['images']} | {sum(n['unreadable'].values())} | "
                     f"{sum(n['no_object'].values())} | " + " | ".join(
            f"{n['agreement'][g]:.1%}{_MARK[n['standing'][g]]} / {n['agreement_all'][g]:.1%}" for g in _ATTRIBUTES) + " |")
    return "\n".join(lines)


AUDITED = ("01_tiny_stable_diffusion", "04_mode_collapse", "04b_collapse_remedies", "07_lora_as_a_control",
           "07b_erasing_a_colour")  # the notebooks that audit the judge on their own images


def _mean_ci(values: list[float], digits: int = 2) -> str:
    lo, hi = mean_ci(values)
    return f"{np.mean(values):.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _lora_vs_full(results: dict[str, dict]) -> str:
    r = results["03_lora_vs_full_finetuning"]
    table, base = r["table"], r["base_model"]
    lines = [f"Seeds {r['seeds']}, {r['steps']} steps, {r['n_per_prompt']} images per prompt; mean [95% CI] "
             "over seeds where an interval is shown (the other rows: seed 0's run).", "",
             "| | " + " | ".join(row["method"] for row in table) + " | base model |", "|---" * (len(table) + 2) + "|"]
    for key in (k for k in table[0] if k != "method"):
        lines.append(f"| {key} | " + " | ".join(str(row[key]) for row in table) + " | "
                     + (f"{base[key]:.2f}" if key in base else "") + " |")
    return "\n".join(lines)


def _collapse(results: dict[str, dict]) -> str:
    r = {**results["04_mode_collapse"], **results["04b_collapse_remedies"]}  # references from 04, remedies from 04b
    seeds = r["per_seed"]
    lines = [f"Mean over seeds {r['seeds']} [95% CI]; {r['steps']} steps. Diversity: Vendi score of the 16 "
             f"samples the judge accepts as one object, in its feature space (16 photos of the instance: "
             f"{r['reference']['instance_photos_diversity']:.2f}; the same object anywhere: "
             f"{r['reference']['anywhere_diversity']:.2f}).", "",
             "| | fidelity | diversity | editability | \"a triangle\" drawn as the instance | faces fixed |",
             "|---|---|---|---|---|---|",
             f"| base model | {r['base']['fidelity']:.2f} | {r['base']['diversity']:.2f} | {r['base']['editability']:.2f} | "
             f"{r['base']['class_as_instance']:.2f} | |"]
    for name, v in seeds.items():
        fixed = ", ".join(r["faces_fixed"].get(name, [])) or ("—" if name in r["faces_fixed"] else "")
        lines.append(f"| {name} | {_mean_ci(v['fidelity'])} | {_mean_ci(v['diversity'])} | {_mean_ci(v['editability'])} | "
                     f"{_mean_ci(v['class_as_instance'])} | {fixed} |")
    return "\n".join(lines)


def _mixing(results: dict[str, dict]) -> str:
    r = results["05_interpolation_and_merging"]
    lines = [f"At t = ½ (peft {r['peft_version']}): each method's ΔW against the exact weight-space midpoint, and what "
             "its samples show along t.", "",
             "| method | ‖ΔW(½)‖ / exact | relative error | P(orange) at ½ | P(striped) at ½ | lowest diversity inside / line between ends | ms per mix |",
             "|---|---|---|---|---|---|---|"]
    weights = r["weights_at_half"]
    for name, m in r["methods"].items():
        w = weights.get(name, weights["weight"] if name == "set_adapters" else None)
        norm = f"{w['‖ΔW(½)‖ / exact']:.2f} | {w['relative error']:.2f}" if w else "— | —"
        lines.append(f"| {name} | {norm} | {m['p_orange_mid']:.2f} | {m['p_striped_mid']:.2f} | {m['diversity_dip']:.2f} | "
                     f"{m['mix_ms']:.0f} |")
    cost = r["cost_vs_base"]
    return "\n".join(lines + ["", f"Generating with two unmerged adapters costs {cost['unmerged']:.2f}× the base model, "
                              f"a merged mix {cost['merged']:.2f}×."])


def _files(results: dict[str, dict]) -> str:
    r = results["06_lora_files_and_implementations"]
    lines = ["| file | alpha read back | orange drawn |", "|---|---|---|"]
    lines += [f"| {name} | {v['alpha read']:g} | {v['orange share']:.2f} |" for name, v in r["alpha_trap"].items()]
    return "\n".join(lines + ["", f"From scratch vs peft, same start: largest loss gap {r['scratch_vs_peft_loss_gap']:.1e}, "
                              f"images {r['scratch_vs_peft_pixels']}/255 apart; kohya file vs peft: "
                              f"{r['kohya_vs_peft_pixels']}/255."])


def _erasers(results: dict[str, dict]) -> str:
    r = results["07b_erasing_a_colour"]
    cols = ["erasure rate", "erasure rate, images with an object", "collateral", "red prompts: shape right",
            "training seconds"]
    lines = ["| eraser | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def cell(value: float | list[float] | None, col: str) -> str:
        """A number, or a mean over seeds with its 95% interval; seconds per seed as a whole number."""
        if value is None:
            return "—"
        if col == "training seconds":
            return f"{value:.0f}"
        return f"{value:.2f}" if isinstance(value, (int, float)) else "{:.2f} [{:.2f}, {:.2f}]".format(*value)

    for name, v in r["erasure"].items():
        lines.append(f"| {name} | " + " | ".join(cell(v.get(c), c) for c in cols) + " |")
    return "\n".join(lines + ["", f"Erasers: mean [95% CI] over training seeds {r['seeds']}; "
                               "training seconds per seed (the seeds train together)."])


def _pretraining(report: dict) -> str:
    return (f"{report['vae_steps']:,} VAE steps on every concept, then {report['unet_steps']:,} text encoder + UNet "
            f"steps at batch {report['batch_size']} on the pre-training concepts: **{_minutes(report['seconds_total'])}** "
            f"on a {report['torch_threads']}-thread {report['device'].upper()} (VAE {_minutes(report['seconds_vae'])}; "
            f"text encoder + UNet {_minutes(report['seconds_text_encoder_unet'])}; final UNet loss "
            f"{report['final_unet_loss']:.4f}; run of {report['date']}).")


def _claims(results_dir: Path) -> str:
    return markdown_table(claims_table(results_dir)).replace("](0", "](notebooks/0")


BLOCKS: dict[str, Callable[[dict[str, dict]], str]] = {
    "notebook-times": _times,
    "base-quality": _base_quality,
    "judge-audit": _judge_audit,
    "lora-vs-full": _lora_vs_full,
    "collapse": _collapse,
    "mixing": _mixing,
    "files": _files,
    "erasers": _erasers,
}


def generated_blocks(results_dir: str | Path = RESULTS_DIR) -> dict[str, str]:
    """Every generated README block, by name, from the saved results."""
    results = _load(Path(results_dir))
    blocks = {name: make(results) for name, make in BLOCKS.items()}
    blocks["claims"] = _claims(Path(results_dir))
    blocks["pretraining"] = _pretraining(json.loads((PIPELINE_DIR / REPORT_NAME).read_text()))
    return blocks


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{re.escape(name)} -->\n)(.*?)(<!-- /generated:{re.escape(name)} -->)", re.S)


def render(text: str, blocks: dict[str, str]) -> str:
    """The README text with every marked block replaced; a block without its markers is an error."""
    for name, body in blocks.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise ValueError(f"README has no markers for block {name!r}: add <!-- generated:{name} --> and "
                             f"<!-- /generated:{name} --> where the table goes")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)
    return text


def update_readme(path: str | Path = README, check: bool = False, results_dir: str | Path = RESULTS_DIR) -> list[str]:
    """Rewrite the README's generated blocks (atomically); with `check`, only list the blocks that are stale."""
    path = Path(path)
    text = path.read_text()
    blocks = generated_blocks(results_dir)
    stale = [name for name, body in blocks.items() if render(text, {name: body}) != text]
    if stale and not check:
        with atomic_path(path) as tmp:
            tmp.write_text(render(text, blocks))
    return stale


# The notebooks' own generated blocks, between the same markers: in the first cell, what the notebook costs
# and asks of the learner (from its saved run times and its cells); in the last, its measured takeaway.
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
QUICK_DIR = RESULTS_DIR / "quick"  # quick-mode run times, recorded by `python -m lorakit readme --record-quick`
GLANCE = "at-a-glance"
_EXERCISE = re.compile(r'exercise\(\s*"([^"]+)"')
_QUESTION = re.compile(r'\bask\(\s*"([^"]+)"\)')


def _seconds(path: Path) -> float | None:
    return json.loads(path.read_text()).get("seconds") if path.is_file() else None


def at_a_glance(notebook: dict, name: str, results_dir: Path = RESULTS_DIR, quick_dir: Path = QUICK_DIR) -> str:
    """The notebook's runtime in both modes (measured) and the exercises and questions its cells hold."""
    sources = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    exercises = [m for s in sources for m in _EXERCISE.findall(s)]
    questions = [m for s in sources for m in _QUESTION.findall(s)]
    lines = [f"**Runtime**, measured on a 2-core laptop CPU: {_minutes(_seconds(results_dir / f'{name}.json'))} in full "
             f"mode, {_minutes(_seconds(quick_dir / f'{name}.json'))} in quick mode (`LORAKIT_QUICK=1`)."]
    if exercises:
        lines.append(f"**Exercises** ({len(exercises)}, each checked, with hints; the summary at the end says what "
                     "is left): " + "; ".join(exercises) + ".")
    if questions:
        lines.append(f"**Check your understanding**: {len(questions)} question{'s' * (len(questions) > 1)} along the "
                     "way, with instant feedback.")
    return "\n\n".join(lines)


def _extra_findings(name: str, results: dict[str, dict], results_dir: Path) -> list[str]:
    """What a notebook measured besides verdicts, for its takeaway."""
    r = results.get(name, {})
    if name.startswith("00"):
        full = sum(s.get("seconds") or 0 for s in results.values())
        return [f"- The whole course took {_minutes(full)} in full mode on the run behind these notebooks; "
                "every notebook's time is at its top."]
    if name.startswith("01") and "base_quality" in r:
        q, audit = r["base_quality"], r.get("judge_audit", {})
        lines = [f"- The base model draws every attribute right in {q['overall']['all']:.1%} of {q['images']} images "
                 f"({q['prompts']} prompts); Fréchet distance to real renders {q['frechet']:.1f} "
                 f"(real against real: {q['frechet_real_vs_real']:.1f})."]
        standing = audit.get("standing", {})
        if standing:
            lines.append("- The judge against the pixel rules, per attribute: "
                         + ", ".join(f"{a} {s}" for a, s in standing.items()) + " (the 95% bar, on its interval).")
        return lines
    if name.startswith("06") and "adapter_kinds" in r:
        kinds = r["adapter_kinds"]
        words = []
        for label in sorted(kinds, key=lambda k: k != "LoRA"):  # LoRA first: the others are read against it
            concept = [x["concept"] for x in kinds[label]]
            text = f"{label} {np.mean(concept):.2f} ({kinds[label][0]['parameters']:,} parameters"
            if label != "LoRA":
                diff, (lo, hi) = paired_difference_ci(concept, [x["concept"] for x in kinds["LoRA"]])
                text += f"; against LoRA: {'higher' if lo > 0 else 'lower' if hi < 0 else 'inconclusive'}, {diff:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            words.append(text + ")")
        return [f"- Four adapter kinds on one concept, same recipe, {len(kinds['LoRA'])} seeds, share drawn orange: "
                + "; ".join(words) + "."]
    if name.startswith("07b"):
        return []
    if name.startswith("07") and "slider" in r:
        s = r["slider"]
        ends = [k for k in ("-1.0", "0.0", "1.0") if k in s]
        return ["- The size slider, share drawn large (object area): "
                + ", ".join(f"scale {'0' if float(k) == 0 else format(float(k), '+g')}: {s[k]['share drawn large']:.2f} ({s[k]['object area (% of image)']:.0f}%)"
                            for k in ends) + "; trained without a single image of a large or small object."]
    if name.startswith("09") and "costs" in r:
        c = r["costs"]
        r4, tiny = c["SD 1.5 r=4"], c["tiny r=4"]
        top = max((k for k in c if k.startswith("SD 1.5")), key=lambda k: c[k]["rank"])
        return [f"- SD 1.5's architecture, built from its published configs: {r['parameters']['SD 1.5 built here']['total']:,} "
                f"parameters, {r['parameters']['SD 1.5 built here']['total'] / r['parameters']['tiny model']['total']:,.0f}x the "
                f"tiny model's; a rank-4 attention LoRA holds {r4['LoRA parameters']:,.0f} of them, as SD 1.5's shapes predict, "
                f"in a {r4['file (MB)']:.2f} MB file.",
                f"- One training step (batch 2, 64 px) took {r4['seconds per step']:.2f} s, {r4['step / tiny step']:.0f}x the "
                f"tiny model's; at rank {c[top]['rank']:.0f} the LoRA is {c[top]['LoRA parameters'] / r4['LoRA parameters']:.0f}x "
                f"larger and its step {c[top]['seconds per step'] / r4['seconds per step']:.2f}x as long."]
    if name.startswith("08"):
        counts = verdict_counts(claims_table(results_dir))
        return [f"- Of the {len(CLAIMS)} claims: " + "; ".join(f"{label}: {len(cs)} ({', '.join(cs)})" for label, cs in counts.items())
                + "."]
    return []


def takeaway(name: str, results: dict[str, dict], results_dir: Path = RESULTS_DIR) -> str:
    """A notebook's measured takeaway: each verdict it saved, with its numbers, and its other headline numbers."""
    lines = []
    for record in results.get(name, {}).get("verdicts", []):
        j = Judgement(name, record)
        lines.append(f"- **{record['claim']}** ({CLAIMS[record['claim']]}): **{j.label}**. {j.numbers()}.")
    return "\n".join(lines + _extra_findings(name, results, Path(results_dir))) or "- Nothing measured here: this notebook sets up."


TAKEAWAY = "takeaway"


def update_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR, check: bool = False,
                     results_dir: str | Path = RESULTS_DIR, quick_dir: str | Path = QUICK_DIR) -> list[str]:
    """Rewrite every notebook's at-a-glance and takeaway blocks (atomically); with `check`, only list stale notebooks."""
    results, stale = _load(Path(results_dir)), []
    for path in sorted(Path(notebooks_dir).glob("[0-9]*.ipynb")):
        nb = json.loads(path.read_text())
        blocks = {GLANCE: at_a_glance(nb, path.stem, Path(results_dir), Path(quick_dir)),
                  TAKEAWAY: takeaway(path.stem, results, Path(results_dir))}
        changed = False
        for name, body in blocks.items():
            cells = [c for c in nb["cells"] if c["cell_type"] == "markdown" and _pattern(name).search("".join(c["source"]))]
            if len(cells) != 1:
                raise ValueError(f"{path.name}: expected one markdown cell with <!-- generated:{name} --> markers, "
                                 f"found {len(cells)}")
            text = "".join(cells[0]["source"])
            new = render(text, {name: body})
            if new != text:
                cells[0]["source"], changed = new.splitlines(True), True
        if changed:
            stale.append(path.stem)
            if not check:
                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return stale


def record_quick_times(quick_results: str | Path, quick_dir: str | Path = QUICK_DIR) -> list[str]:
    """Copy each notebook's quick-mode run time from a quick run's results (runs/quick-results/) into quick_dir."""
    found = sorted(Path(quick_results).glob("[0-9]*.json"))
    if not found:
        raise FileNotFoundError(f"no quick-mode results in {quick_results}: run the notebooks in quick mode first "
                                "(make quick-times does both)")
    Path(quick_dir).mkdir(parents=True, exist_ok=True)
    for path in found:
        with atomic_path(Path(quick_dir) / path.name) as tmp:
            tmp.write_text(json.dumps({"seconds": _seconds(path)}) + "\n")
    return [p.stem for p in found]
