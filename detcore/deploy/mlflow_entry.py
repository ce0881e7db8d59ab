"""The file MLflow loads a registered detector from ("models from code": no pickled object in the
model, only this file and the packages ``detcore.deploy.mlflow_model.register`` adds)."""
from mlflow.models import set_model

from detcore.deploy.mlflow_model import DetectorModel

set_model(DetectorModel())
