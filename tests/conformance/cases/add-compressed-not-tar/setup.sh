gzip -n f
