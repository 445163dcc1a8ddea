chmod 4755 s
chmod 2755 g
