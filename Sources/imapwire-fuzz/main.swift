import IMAPWire
print("x")
