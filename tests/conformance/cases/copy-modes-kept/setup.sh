chmod 0755 x
chmod 0600 p
chmod 0444 r
chmod 0700 d
