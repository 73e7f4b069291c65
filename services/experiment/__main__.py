from services._registry import main

main("experiment")
