from services._registry import main

main("binding")
