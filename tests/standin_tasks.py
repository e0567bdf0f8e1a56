"""Stand-ins for the paper's 12 lmms-eval tasks: each real task's own YAML, hooks and metrics on a tiny local dataset.

:func:`write_standin_tasks` copies, at test time, each task's YAML (its ``include`` templates merged the way lmms-eval
merges them) and the modules its ``!function`` hooks name from the *installed* lmms-eval package, renames the task to
``standin_<name>`` (lmms-eval's own tasks stay indexed next to it), points it at a 3-4 row parquet file written here
with the columns and feature types the task's code reads, and patches only what cannot run without the hub
(:data:`PATCHES`). :func:`judge_server` is a local OpenAI-compatible chat-completions stub for the three judged tasks
(MM-Vet, LLaVA-Bench in-the-wild, MMBench's answer matcher); :data:`EXPECTED_METRICS` lists the numeric metrics each
task's own aggregations report.
"""
from __future__ import annotations

import json
import random
import threading
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

REAL_TASKS = ("vqav2_val", "gqa", "vizwiz_vqa_val", "scienceqa_img", "textvqa_val", "pope", "mme", "mmbench_en_dev",
              "mmbench_cn_dev", "seedbench", "llava_in_the_wild", "mmvet")
PAPER_TASKS: dict[str, str] = {name: f"standin_{name}" for name in REAL_TASKS}
"""Real lmms-eval task name -> its stand-in's task name."""

# real task -> (folder under lmms_eval/tasks, the task's YAML there, data files its utils open next to themselves)
SOURCES = {
    "vqav2_val": ("vqav2", "vqav2_val.yaml", ()),
    "gqa": ("gqa", "gqa.yaml", ()),
    "vizwiz_vqa_val": ("vizwiz_vqa", "vizwiz_vqa_val.yaml", ()),
    "scienceqa_img": ("scienceqa", "scienceqa_img.yaml", ()),
    "textvqa_val": ("textvqa", "textvqa_val.yaml", ()),
    "pope": ("pope", "pope.yaml", ()),
    "mme": ("mme", "mme.yaml", ()),
    "mmbench_en_dev": ("mmbench", "mmbench_en_dev.yaml", ()),
    "mmbench_cn_dev": ("mmbench", "mmbench_cn_dev.yaml", ()),
    "seedbench": ("seedbench", "seedbench.yaml", ()),
    "llava_in_the_wild": ("llava-in-the-wild", "llava-in-the-wild.yaml", ("rule.json",)),
    "mmvet": ("mmvet", "mmvet.yaml", ()),
}
# The stand-in YAMLs keep their file names: mmvet/utils.py and llava-in-the-wild/utils.py open their own YAML by
# name (and mmbench's en/cn utils open mmbench.yaml), so no utils module needs a path patch for that.

EXPECTED_METRICS: dict[str, set[str]] = {PAPER_TASKS[task]: metrics for task, metrics in {
    "vqav2_val": {"exact_match"},
    "gqa": {"exact_match"},
    "vizwiz_vqa_val": {"exact_match"},
    "scienceqa_img": {"exact_match"},
    "textvqa_val": {"exact_match"},  # + submission: its aggregation writes a file and returns None
    "pope": {"pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio"},
    "mme": {"mme_perception_score", "mme_cognition_score"},
    "mmbench_en_dev": {"gpt_eval_score"},  # + submission (an .xlsx file, None)
    "mmbench_cn_dev": {"gpt_eval_score"},  # + submission (an .xlsx file, None)
    "seedbench": {"seed_image", "seed_video", "seed_all"},
    "llava_in_the_wild": {"gpt_eval_llava_all", "gpt_eval_llava_conv", "gpt_eval_llava_detail",
                          "gpt_eval_llava_complex"},
    "mmvet": {"gpt_eval_score"},
}.items()}
"""Stand-in task -> the numeric metrics its own aggregations report (no ``,none`` filter suffix). The YAMLs' metric
lists also name ``submission`` for textvqa_val and the MMBench tasks, whose aggregations only write a submission file
and return None (not a metric value: vtr_bench's results.json drops it)."""

NON_NUMERIC_METRICS = {"submission"}

# Patches to copied files: (file name in the stand-in folder, exact text, replacement, why). Each text must occur
# exactly once in the installed file, so a changed lmms-eval fails here instead of silently running the hub code.
PATCHES = {
    "gqa": [(
        "utils.py",
        ('gqa_raw_image_dataset = load_dataset("lmms-lab-encoder/GQA", "testdev_balanced_images", '
         'split="testdev", token=True)'),
        ("# stand-in patch: the image config comes from the local parquet file, not from the hub\n"
         '    gqa_raw_image_dataset = load_dataset("parquet", split="testdev", data_files={"testdev": '
         '__file__.rsplit("/", 1)[0] + "/gqa_testdev_balanced_images.parquet"})'),
        "gqa_process_docs loads the testdev_balanced_images hub config to join images by imageId",
    )],
}


# --- YAML: keep `!function` hooks as they are ---------------------------------------------------------------------

class Function(str):
    """The text of a ``!function module.name`` hook, dumped back unchanged."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: Function(loader.construct_scalar(node)))
_Dumper.add_representer(Function, lambda dumper, data: dumper.represent_scalar("!function", str(data), style=""))
_Dumper.add_representer(str, lambda dumper, data: dumper.represent_scalar(  # prompts with newlines: "\n..."
    "tag:yaml.org,2002:str", data, style='"' if "\n" in data else None))


def load_task_yaml(path: Path) -> dict:
    """A task YAML with its ``include`` templates merged as lmms-eval merges them (templates first, shallow update)."""
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    includes = config.pop("include", None)
    if includes is None:
        return config
    merged: dict = {}
    for include in reversed([includes] if isinstance(includes, str) else includes):
        merged.update(load_task_yaml(path.parent / include))
    merged.update(config)
    return merged


def _hook_modules(value) -> set[str]:
    """The module names of every ``!function module.name`` in a config."""
    if isinstance(value, Function):
        return {value.rsplit(".", 1)[0]}
    if isinstance(value, dict):
        return set().union(*map(_hook_modules, value.values()))
    if isinstance(value, list):
        return set().union(*map(_hook_modules, value))
    return set()


def _dump_yaml(config: dict, header: str) -> str:
    return header + yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def lmms_eval_tasks_dir() -> Path:
    """The installed lmms-eval's ``tasks`` folder (found without importing it: its import takes seconds)."""
    import importlib.util

    return Path(importlib.util.find_spec("lmms_eval").submodule_search_locations[0]) / "tasks"


# --- data ---------------------------------------------------------------------------------------------------------

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")


def _image(seed: int | None = None, scene: tuple = (), size: int = 64):
    """A small RGB image: shapes in the cells of a 3x3 grid on a light background (like the bundled shapes
    benchmark the tiny model knows). ``scene``: ``(row, col, color, shape)`` objects; else 2-3 random ones."""
    from PIL import Image, ImageDraw

    if not scene:
        rng = random.Random(seed)
        scene = tuple((cell // 3, cell % 3, rng.choice(list(COLORS)), rng.choice(SHAPES))
                      for cell in rng.sample(range(9), rng.randint(2, 3)))
    image = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    cell, half = size / 3, size * 6.5 / 48
    for row, col, color, shape in scene:
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        box = [cx - half, cy - half, cx + half - 1, cy + half - 1]
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[color])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[color])
        else:
            draw.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=COLORS[color])
    return image


def _vqa_answers(*answers: str) -> list[str]:
    """Ten annotator answers (VQA's format), the first ones given."""
    return [*answers, *[answers[-1]] * (10 - len(answers))]


def _datasets():
    """Real task -> {parquet file stem: (columns, features)} (the first file is the task's split)."""
    from datasets import Features, Image, List, Value

    img = Image()
    s, i64 = Value("string"), Value("int64")
    data = {}

    answers = [_vqa_answers("red", "red", "red", "pink"), _vqa_answers("2", "two", "2"), _vqa_answers("yes")]
    data["vqav2_val"] = {"validation": (
        {"question_id": [1001, 1002, 1003], "question": ["What color is the circle?", "How many shapes are there?",
                                                           "Is there a square?"],
         "image": [_image(1), _image(2), _image(3)],
         "answers": [[{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(row)]
                     for row in answers]},
        Features({"question_id": i64, "question": s, "image": img,
                  "answers": List({"answer": s, "answer_confidence": s, "answer_id": i64})}))}

    data["gqa"] = {
        "testdev": ({"id": ["201", "202", "203"], "imageId": ["n1", "n2", "n1"],
                     "question": ["Is the circle red?", "What shape is on the left?", "Which color is the square?"],
                     "answer": ["yes", "circle", "blue"]},
                    Features({"id": s, "imageId": s, "question": s, "answer": s})),
        "testdev_balanced_images": ({"id": ["n1", "n2"], "image": [_image(4), _image(5)]},
                                    Features({"id": s, "image": img})),
    }

    data["vizwiz_vqa_val"] = {"val": (
        {"question_id": ["VizWiz_val_00000000.jpg", "VizWiz_val_00000001.jpg", "VizWiz_val_00000002.jpg"],
         "question": ["what color is this?", "what is this?", "can you read the label?"],
         "image": [_image(6), _image(7), _image(8)],
         "answers": [_vqa_answers("red", "red", "red"), _vqa_answers("box", "unanswerable"),
                     _vqa_answers("unanswerable")]},
        Features({"question_id": s, "question": s, "image": img, "answers": List(s)}))}

    data["scienceqa_img"] = {"test": (
        {"question": ["Which shape is red?", "Which color is the largest shape?", "How many circles are there?"],
         "hint": ["The picture shows several shapes.", "", ""],
         "choices": [["the circle", "the square"], ["red", "green", "blue"], ["one", "two", "three", "four"]],
         "answer": [0, 2, 1], "image": [_image(9), _image(10), _image(11)]},
        Features({"question": s, "hint": s, "choices": List(s), "answer": Value("int8"), "image": img}))}

    data["textvqa_val"] = {"validation": (
        {"question_id": [34602, 34603, 34604], "question": ["what is written here?", "what number is shown?",
                                                              "what brand is this?"],
         "image": [_image(12), _image(13), _image(14)],
         "answers": [_vqa_answers("stop", "stop", "stop"), _vqa_answers("7", "seven"), _vqa_answers("acme")],
         "ocr_tokens": [["stop"], ["7"], ["acme", "inc"]]},
        Features({"question_id": i64, "question": s, "image": img, "answers": List(s), "ocr_tokens": List(s)}))}

    # POPE / MME: yes/no object questions, in the words of the shapes benchmark the tiny model was trained on
    two = ((0, 0, "red", "circle"), (2, 2, "blue", "square"))
    one = ((1, 1, "green", "triangle"),)
    data["pope"] = {"test": (
        {"question_id": ["1", "2", "3", "4"],
         "question": ["Is there a circle?", "Is there a triangle?", "Is there a green object?",
                      "Is there a yellow object?"],
         "answer": ["yes", "no", "yes", "no"], "image": [_image(scene=two), _image(scene=two), _image(scene=one),
                                                         _image(scene=one)],
         "category": ["adversarial", "adversarial", "popular", "random"]},
        Features({"question_id": s, "question": s, "answer": s, "image": img, "category": s}))}

    # MME scores pairs: every question_id (an image) has a "yes" and a "no" question
    data["mme"] = {"test": (
        {"question_id": ["existence/0001.png", "existence/0001.png", "commonsense_reasoning/0002.png",
                         "commonsense_reasoning/0002.png"],
         "category": ["existence", "existence", "commonsense_reasoning", "commonsense_reasoning"],
         "image": [_image(scene=two), _image(scene=two), _image(scene=one), _image(scene=one)],
         "question": ["Is there a red object? Please answer yes or no.",
                      "Is there a yellow object? Please answer yes or no.",
                      "Is there a triangle? Please answer yes or no.",
                      "Is there a square? Please answer yes or no."],
         "answer": ["Yes", "No", "Yes", "No"]},
        Features({"question_id": s, "category": s, "image": img, "question": s, "answer": s}))}

    # option texts the tiny model will not say, so MMBench's rule matcher fails and asks the judge
    mmbench = {"index": [0, 1, 2], "hint": [None, "Look at the shapes.", None],
               "answer": ["A", "B", "C"], "split": ["dev"] * 3, "source": ["standin"] * 3,
               "category": ["object_localization", "attribute_recognition", "spatial_relationship"],
               "L2-category": ["fine-grained_perception (instance-level)", "coarse_perception",
                               "relation_reasoning"]}
    mm_features = Features({"index": i64, "question": s, "hint": s, "A": s, "B": s, "C": s, "D": s, "answer": s,
                            "category": s, "L2-category": s, "source": s, "split": s, "image": img})
    data["mmbench_en_dev"] = {"dev": (
        {**mmbench, "question": ["Which object is in the top left?", "What is the main colour?",
                                 "Where is the circle?"],
         "A": ["xylophone", "vermilion", "beneath the quokka"], "B": ["zeppelin", "chartreuse", "above the yak"],
         "C": ["kumquat", "periwinkle", "left of the gnu"], "D": ["quasar", "mauve", "inside the ibex"],
         "image": [_image(19), _image(20), _image(21)]}, mm_features)}
    data["mmbench_cn_dev"] = {"dev": (
        {**mmbench, "hint": [None, "请看图中的形状。", None],
         "question": ["左上角是什么物体？", "主要颜色是什么？", "圆在哪里？"],
         "A": ["木琴", "朱红", "在袋鼠下面"], "B": ["飞艇", "黄绿", "在牦牛上面"],
         "C": ["金橘", "长春花蓝", "在角马左边"], "D": ["类星体", "淡紫", "在羚羊里面"],
         "image": [_image(22), _image(23), _image(24)]}, mm_features)}

    choices = {"choice_a": ["red", "one", "a circle", "moving left"], "choice_b": ["green", "two", "a square",
                                                                                 "moving right"],
               "choice_c": ["blue", "three", "a star", "not moving"], "choice_d": ["yellow", "four", "a line",
                                                                                  "spinning"]}
    data["seedbench"] = {"test": (
        {"question_id": ["101", "102", "v_201", "v_202"], "question_type_id": [1, 2, 10, 11],
         "data_type": ["image", "image", "video", "video"],
         "question": ["What color is the circle?", "How many shapes are there?",
                      "What appears in the clip?", "How does the shape move?"],
         **choices, "answer": ["A", "B", "A", "C"],
         "image": [[_image(25)], [_image(26)], [_image(27 + k) for k in range(3)], [_image(30 + k) for k in range(4)]]},
        Features({"question_id": s, "question_type_id": i64, "data_type": s, "question": s,
                  **{key: s for key in choices}, "answer": s, "image": List(img)}))}

    data["llava_in_the_wild"] = {"train": (
        {"question_id": [0, 1, 2], "category": ["conv", "detail", "complex"],
         "question": ["What shapes are in the image?", "Describe the image in detail.",
                      "Why might someone draw these shapes?"],
         "caption": ["A red circle and a blue square.", "Two shapes on a light background.",
                     "A child's drawing of shapes."],
         "gpt_answer": ["A red circle and a blue square.",
                        "The image shows a red circle and a blue square on a light background.",
                        "Perhaps to teach a child the names of shapes and colours."],
         "image": [_image(34), _image(35), _image(36)]},
        Features({"question_id": i64, "category": s, "question": s, "caption": s, "gpt_answer": s, "image": img}))}

    data["mmvet"] = {"test": (
        {"question_id": ["v1_0", "v1_1", "v1_2"], "question": ["What color is the circle?", "How many shapes?",
                                                               "What is written on the sign?"],
         "answer": ["red", "3<OR>three", "stop"], "capability": ["rec", "rec,math", "ocr,rec"],
         "image": [_image(37), _image(38), _image(39)]},
        Features({"question_id": s, "question": s, "answer": s, "capability": s, "image": img}))}
    return data


def write_standin_tasks(root: Path) -> Path:
    """Write the 12 stand-in tasks under ``root``; returns the folder to pass as an lmms-eval include path."""
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    source_dir, out = lmms_eval_tasks_dir(), Path(root) / "standin_tasks"
    bars = not are_progress_bars_disabled()
    disable_progress_bars()  # to_parquet's bar, once per file
    try:
        _write(source_dir, out)
    finally:
        if bars:
            enable_progress_bars()
    return out


def _write(source_dir: Path, out: Path) -> None:
    from datasets import Dataset

    for real, tables in _datasets().items():
        folder, yaml_name, data_files = SOURCES[real]
        src, dst = source_dir / folder, out / folder
        dst.mkdir(parents=True, exist_ok=True)
        files = {}
        for stem, (columns, features) in tables.items():
            files[stem] = dst / f"{real}_{stem}.parquet"
            Dataset.from_dict(columns, features=features).to_parquet(files[stem])
        config = load_task_yaml(src / yaml_name)
        split = config["test_split"]
        changes = [f"task: {config['task']} -> {PAPER_TASKS[real]}", "data: the local parquet file"]
        config["task"] = PAPER_TASKS[real]
        config["dataset_path"] = "parquet"  # was the hub dataset (dataset_kwargs: token: True)
        config["dataset_kwargs"] = {"data_files": {split: str(files[split])}}
        config.pop("dataset_name", None)  # a hub config name (MMBench "en"/"cn", GQA, ScienceQA-IMG)
        for key in ("tag", "group"):  # mmbench_en_dev's tag would add the stand-in to lmms-eval's tag
            if config.pop(key, None) is not None:
                changes.append(f"{key} dropped")
        header = (f"# Stand-in of lmms-eval's {real} (tasks/{folder}/{yaml_name}, includes merged), written by "
                  f"tests/standin_tasks.py: {'; '.join(changes)}.\n")
        (dst / yaml_name).write_text(_dump_yaml(config, header), encoding="utf-8")
        for name in sorted(f"{module}.py" for module in _hook_modules(config)) + list(data_files):
            text = (src / name).read_text(encoding="utf-8")
            for file, old, new, _why in PATCHES.get(real, ()):
                if file == name:
                    assert text.count(old) == 1, f"lmms-eval's {folder}/{name} changed: {old!r} not found once"
                    text = text.replace(old, new)
            (dst / name).write_text(text, encoding="utf-8")
    _write_mmbench_metadata(source_dir / "mmbench" / "mmbench.yaml", out / "mmbench" / "mmbench.yaml")


def _write_mmbench_metadata(src: Path, dst: Path) -> None:
    """MMBench's en/cn utils read ``metadata.sys_prompt`` from mmbench.yaml next to them at import. That file is
    the ``mmbench`` group: its copy is renamed (``standin_mmbench``, listing the stand-ins) so that it does not
    replace lmms-eval's own group in the task index; its metadata are kept."""
    config = yaml.load(src.read_text(encoding="utf-8"), Loader=_Loader)
    config["group"] = "standin_mmbench"
    config["task"] = [PAPER_TASKS[t] for t in config["task"] if t in PAPER_TASKS]
    header = "# lmms-eval's tasks/mmbench/mmbench.yaml, group renamed for the stand-ins (tests/standin_tasks.py).\n"
    dst.write_text(_dump_yaml(config, header), encoding="utf-8")


# --- judge --------------------------------------------------------------------------------------------------------

JUDGE_REPLIES = {
    "mmvet": "0.5",  # mmvet_process_results: float(content.split(" ")[0]) in [0, 1]
    "llava_in_the_wild": "8 7\nBoth answers are relevant; the second one is less detailed.",  # first line: 2 scores
    "mmbench": "A",  # MMBench_Evaluator.can_infer: exactly one option letter
}


def judge_of(prompt: str) -> str:
    """Which task's judge prompt this is (each judge's parser accepts a different reply)."""
    if "correctness score" in prompt:
        return "mmvet"
    if "single uppercase character" in prompt:
        return "mmbench"
    return "llava_in_the_wild"  # "[Context] ... [System] <rule prompt>"


class JudgeStub:
    """What :func:`judge_server` yields: ``env`` for the evaluating subprocess, ``count`` (requests so far) and
    ``calls`` (a Counter of requests per judge: ``mmvet``, ``llava_in_the_wild``, ``mmbench``) and ``prompts`` (each
    request's last message, in arrival order: it quotes the model's answer)."""

    def __init__(self, port: int):
        self.port = port
        # MMBench posts to OPENAI_API_URL as is; lmms_eval.llm_judge (MM-Vet, LLaVA-W) uses it as the OpenAI client's
        # base_url (posting to <it>/chat/completions): the stub answers any path.
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.env = {"OPENAI_API_KEY": "sk-standin", "OPENAI_API_URL": self.url, "API_TYPE": "openai",
                    "MODEL_VERSION": "gpt-4o-standin", "NO_PROXY": "127.0.0.1,localhost",
                    "no_proxy": "127.0.0.1,localhost"}
        self.calls: Counter = Counter()
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    @property
    def count(self) -> int:
        with self.lock:
            return sum(self.calls.values())


@contextmanager
def judge_server():
    """A local OpenAI-compatible chat-completions endpoint answering each judge with a fixed valid reply."""
    stub: JudgeStub

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            messages = body.get("messages") or [{}]
            content = messages[-1].get("content", "")
            if isinstance(content, list):  # content parts
                content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            judge = judge_of(content)
            with stub.lock:
                stub.calls[judge] += 1
                stub.prompts.append(content)
            reply = json.dumps({
                "id": "chatcmpl-standin", "object": "chat.completion", "created": 0,
                "model": body.get("model", "gpt-4o-standin"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": JUDGE_REPLIES[judge]}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub = JudgeStub(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def yaml_metric_names(config_path: Path) -> set[str]:
    """The metric names a task YAML lists (includes merged), without the non-numeric ones
    (:data:`NON_NUMERIC_METRICS`)."""
    return {m["metric"] for m in load_task_yaml(Path(config_path))["metric_list"]} - NON_NUMERIC_METRICS



def standin_configs(folder: Path) -> dict[str, Path]:
    """Stand-in task -> its YAML file in a folder written by :func:`write_standin_tasks`."""
    configs = {}
    for path in sorted(Path(folder).rglob("*.yaml")):
        task = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader).get("task")
        if isinstance(task, str) and task in PAPER_TASKS.values():
            configs[task] = path
    return configs


def standin_docs(folder: Path) -> dict[str, int]:
    """Stand-in task -> its number of docs (rows of its split's parquet file)."""
    import pyarrow.parquet as pq

    docs = {}
    for task, path in standin_configs(folder).items():
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        docs[task] = pq.read_metadata(config["dataset_kwargs"]["data_files"][config["test_split"]]).num_rows
    return docs
