"""Run at image build: the image's Spark JVM and the venv's pyspark are one release, and the stack imports."""

import glob
import re
import sys

import pyspark

jars = glob.glob("/opt/spark/jars/spark-core_*.jar")
jvm = re.search(r"spark-core_[\d.]+-(.+)\.jar$", jars[0]).group(1) if jars else "absent"
if jvm != pyspark.__version__:
    sys.exit(f"the image's Spark is {jvm} but constraints/current.txt pins pyspark {pyspark.__version__}: "
             f"build with --build-arg SPARK_VERSION={pyspark.__version__}")

import astropy  # noqa: E402
import dipy  # noqa: E402
import numpy  # noqa: E402
import pyarrow  # noqa: E402
import tensorflow  # noqa: E402

import scilens  # noqa: E402

print(f"scilens {scilens.__file__} on Spark {jvm}: numpy {numpy.__version__}, pyarrow {pyarrow.__version__}, "
      f"tensorflow {tensorflow.__version__}, dipy {dipy.__version__}, astropy {astropy.__version__}")
