"""MindSpore Serving's image-classifier shape (its resnet example's classify_top5), unchanged for
shardserve: the request is the image file's bytes, a Python preprocess decodes and resizes it with
PIL, the CNN runs, and a Python postprocess returns the top-5 labels as one ";"-joined string with
their scores."""
import io

import numpy as np
from PIL import Image
from mindspore_serving.server import register

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

cnn = register.declare_model(model_file="cnn.mindir", model_format="MindIR", with_batch_dim=False)


def preprocess(image):
    """Image bytes (MindSpore hands BYTES over as a 1-D uint8 array) -> x[1,3,32,32] in [0, 1]."""
    img = Image.open(io.BytesIO(image.tobytes())).convert("RGB").resize((32, 32), Image.BILINEAR)
    return (np.asarray(img, np.float32) / 255.0).transpose(2, 0, 1)[None]


def top5(logits):
    scores = logits.reshape(-1)
    order = np.argsort(-scores, kind="stable")[:5]
    return ";".join(LABELS[i] for i in order), scores[order]


@register.register_method(output_names=["label", "score"])
def classify_top5(image):
    x = register.add_stage(preprocess, image, outputs_count=1, tag="Preprocess")
    logits = register.add_stage(cnn, x, outputs_count=1)
    label, score = register.add_stage(top5, logits, outputs_count=2, tag="Postprocess")
    return label, score


@register.register_method(output_names=["logits"])
def predict(x):
    logits = register.add_stage(cnn, x, outputs_count=1)
    return logits
