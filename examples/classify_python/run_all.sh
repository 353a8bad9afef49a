#!/usr/bin/env bash
# The image-classifier example end to end (MindSpore's resnet classify_top5 shape): an unchanged
# servable_config.py whose request is the image file's bytes, decoded and resized by a Python
# preprocess (PIL, Debian's python3-pil), a CNN in ONNX (declared as cnn.mindir, served from its
# .onnx sibling), and a Python postprocess returning the top-5 labels as a string. Queries with
# MindSpore's client (gRPC, bytes) and curl (REST, {"b64": ...}); the answers are checked against
# the same model called directly on the client's own decoding. Exits non-zero on a wrong answer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../common/serve_one_rank.sh
source "$here/../common/serve_one_rank.sh"
serve_config_example classify cnn.onnx
echo "--- MindSpore's client (gRPC) to $grpc, REST to $rest"
/usr/bin/python3 - "$grpc" "$rest" "$here/../../python" "$here/classify" <<'PY'
import base64, io, json, sys, urllib.request
import numpy as np
from PIL import Image
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from mindspore_serving.client import Client  # MindSpore's import, unchanged

def jpeg(seed):
    rng = np.random.RandomState(seed)
    pixels = rng.rand(48, 64, 3) * 128
    pixels[..., seed % 3] += 127  # a tint per image, so the two rankings differ
    pixels = pixels.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()

import importlib.util
spec = importlib.util.spec_from_file_location("cfg", sys.argv[4] + "/servable_config.py")
cfg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cfg)  # the config's own functions, to check the served pipeline with


def expected(image):
    """The pipeline by hand: the config's preprocess, the model through method predict, top 5."""
    x = cfg.preprocess(np.frombuffer(image, np.uint8))
    logits = Client(sys.argv[1], "classify", "predict").infer([{"x": x}])[0]["logits"]
    return cfg.top5(logits)

images = [jpeg(1), jpeg(2)]
got = Client(sys.argv[1], "classify", "classify_top5").infer([{"image": im} for im in images] +
                                                             [{"image": b"not an image"}])
for im, g in zip(images, got):
    label, score = expected(im)
    assert g["label"] == label and np.allclose(g["score"], score, rtol=1e-5), (g, label, score)
    print("top 5:", g["label"], np.round(g["score"], 3))
assert got[2]["error"].startswith("Call Preprocess Failed, method: 'classify_top5', stage index(begin with 1): 1, "
                                  "error msg: cannot identify image file"), got[2]
print("gRPC: ok (a broken image fails only its instance:", got[2]["error"][:60] + "...)")
body = json.dumps({"instances": [{"image": {"b64": base64.b64encode(images[0]).decode()}}]}).encode()
req = urllib.request.Request("http://%s/model/classify:classify_top5" % sys.argv[2], data=body, method="POST",
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    inst = json.loads(r.read())["instances"][0]
assert inst["label"] == got[0]["label"] and np.allclose(inst["score"], got[0]["score"], rtol=1e-5), inst
print("REST ({\"b64\": jpeg}): ok,", inst["label"])
PY
