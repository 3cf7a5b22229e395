"""scilens: Spark-native scientific image analytics and deep-learning model diagnosis."""

__version__ = "0.1.0"
