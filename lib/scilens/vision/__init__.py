"""CNNs for scientific images: model builders, training, batch inference on Spark.

* :mod:`scilens.vision.inference` -- any saved Keras model over a Spark image
  table with ``pyspark.ml.functions.predict_batch_udf`` (named outputs: a
  layer's activations, logits, probabilities, prediction).
* :mod:`scilens.vision.lenet`, :mod:`scilens.vision.galaxy_cnn` -- the two
  models of the model-diagnosis study; :mod:`scilens.vision.training` fits
  such small models in one process.

TensorFlow is imported inside functions, so importing these modules is cheap.
"""
