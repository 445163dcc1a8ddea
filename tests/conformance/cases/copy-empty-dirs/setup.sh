mkdir -p empty d/inner/deeper
chmod 0750 d/inner
