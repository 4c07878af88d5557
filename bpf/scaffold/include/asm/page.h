/* rsttrace scaffold: helpers.h wants PAGE_SIZE. */
#define PAGE_SIZE 4096
