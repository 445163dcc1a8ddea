chmod 0775 d d/sub e
chmod 0700 e
