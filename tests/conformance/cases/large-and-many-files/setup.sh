head -c 5000000 /dev/zero | openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 > big.bin
mkdir many
i=0; while [ $i -lt 300 ]; do echo $i > many/f$i; i=$((i+1)); done
