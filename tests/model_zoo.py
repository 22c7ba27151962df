"""Models a user brings, small and with random weights: the shapes the workbench must take whole (issue 20)."""

import keras

IMAGE = (32, 32, 3)


def sequential_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(IMAGE),
            keras.layers.Conv2D(8, 3, padding="same", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="sequential_cnn",
    )


def _base() -> keras.Model:
    return keras.applications.MobileNetV2(input_shape=IMAGE, include_top=False, weights=None, alpha=0.35)


def transfer_functional(base: keras.Model | None = None) -> keras.Model:
    """``x = base(inp, training=False)``, pooling and a new head: the transfer-learning shape."""
    base = base or _base()
    inp = keras.Input(IMAGE, name="image")
    x = base(inp, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(10, name="head")(x), name="transfer_functional")


def transfer_sequential(base: keras.Model | None = None) -> keras.Model:
    base = base or _base()
    return keras.Sequential(
        [keras.Input(IMAGE), base, keras.layers.GlobalAveragePooling2D(name="pool"), keras.layers.Dense(10, name="head")],
        name="transfer_sequential",
    )


def transfer_flat(base: keras.Model) -> keras.Model:
    """The same network as :func:`transfer_functional`, written flat (the head continues the base's own graph)."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    return keras.Model(base.input, keras.layers.Dense(10, name="head")(x))


def listed_io() -> keras.Model:
    inp = keras.Input(IMAGE)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model([inp], [keras.layers.Dense(10)(x)], name="listed_io")


def application(name: str):
    return lambda: getattr(keras.applications, name)(input_shape=IMAGE, weights=None, classes=10)


def small_vit() -> keras.Model:
    """Patch Conv2D, LayerNormalization, MultiHeadAttention, GELU Dense, residual Adds."""
    inp = keras.Input(IMAGE)
    x = keras.layers.Conv2D(32, 8, strides=8, name="patches")(inp)
    x = keras.layers.Reshape((16, 32))(x)
    for i in range(2):
        y = keras.layers.LayerNormalization(name=f"ln{i}a")(x)
        y = keras.layers.MultiHeadAttention(4, 8, name=f"mha{i}")(y, y)
        x = keras.layers.Add()([x, y])
        y = keras.layers.LayerNormalization(name=f"ln{i}b")(x)
        y = keras.layers.Dense(64, activation="gelu")(y)
        x = keras.layers.Add()([x, keras.layers.Dense(32)(y)])
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x), name="small_vit")


def keyword_spotting() -> keras.Model:
    inp = keras.Input((49, 10))
    x = keras.layers.Conv1D(16, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.SeparableConv1D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(12)(x), name="keyword_spotting")


def small_unet() -> keras.Model:
    inp = keras.Input(IMAGE)
    a = keras.layers.SeparableConv2D(8, 3, padding="same", activation="relu")(inp)
    b = keras.layers.MaxPooling2D()(a)
    b = keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu")(b)
    u = keras.layers.Conv2DTranspose(8, 2, strides=2)(b)
    c = keras.layers.Concatenate()([a, u])
    return keras.Model(inp, keras.layers.Conv2D(2, 1)(c), name="small_unet")


def two_inputs() -> keras.Model:
    a, b = keras.Input(IMAGE, name="left"), keras.Input(IMAGE, name="right")
    x = keras.layers.Concatenate()([keras.layers.Conv2D(4, 3)(a), keras.layers.Conv2D(4, 3)(b)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model([a, b], keras.layers.Dense(10)(x), name="two_inputs")


def two_outputs() -> keras.Model:
    inp = keras.Input(IMAGE)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(inp))
    return keras.Model(inp, [keras.layers.Dense(10, name="classes")(x), keras.layers.Dense(1, name="score")(x)], name="two_outputs")


ZOO = {
    "sequential_cnn": sequential_cnn,
    "transfer_functional": transfer_functional,
    "transfer_sequential": transfer_sequential,
    "listed_io": listed_io,
    "mobilenet_v2": application("MobileNetV2"),
    "mobilenet_v3_small": application("MobileNetV3Small"),
    "efficientnet_b0": application("EfficientNetB0"),
    "densenet121": application("DenseNet121"),
    "convnext_tiny": application("ConvNeXtTiny"),
    "small_vit": small_vit,
    "keyword_spotting": keyword_spotting,
    "small_unet": small_unet,
    "two_inputs": two_inputs,
    "two_outputs": two_outputs,
}
APPLICATIONS = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "convnext_tiny")
# the layer types whose every weight element must be quantized
QUANTIZED_TYPES = (
    "Conv1D",
    "Conv2D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "Conv2DTranspose",
    "Dense",
    "EinsumDense",
    "Embedding",
)
