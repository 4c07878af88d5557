/* rsttrace scaffold: nothing from if_packet.h is used. */
